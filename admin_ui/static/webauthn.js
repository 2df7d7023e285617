// Passkeys: the only script of the console. Buttons marked data-webauthn="create" or "get"
// fetch their ceremony's options (bound to this session and purpose by the server), run
// the browser's WebAuthn ceremony and submit the surrounding form with the credential.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf"]');
  return meta ? meta.content : "";
}

async function ceremony(button) {
  const form = button.closest("form");
  const response = await fetch(button.dataset.options, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() },
  });
  if (!response.ok) {
    throw new Error("the server refused to start the passkey ceremony (" + response.status + ")");
  }
  const options = await response.json();
  let credential;
  if (button.dataset.webauthn === "create") {
    credential = await navigator.credentials.create({
      publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
    });
  } else {
    credential = await navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
    });
  }
  form.elements.credential.value = JSON.stringify(credential.toJSON());
  form.submit();
}

function report(button, error) {
  let note = button.parentElement.querySelector(".passkey-error");
  if (!note) {
    note = document.createElement("p");
    note.className = "passkey-error error";
    note.setAttribute("role", "alert");
    button.insertAdjacentElement("afterend", note);
  }
  note.textContent = "Passkey not used: " + error.message;
}

document.addEventListener("DOMContentLoaded", () => {
  if (!window.PublicKeyCredential || !PublicKeyCredential.parseRequestOptionsFromJSON) {
    return;
  }
  for (const button of document.querySelectorAll("button[data-webauthn]")) {
    button.hidden = false;
    button.addEventListener("click", () => {
      button.disabled = true;
      ceremony(button).catch((error) => { button.disabled = false; report(button, error); });
    });
  }
});
