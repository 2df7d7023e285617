"""Reading a file's header and counting its records, keeping no value (issue 24)."""

from __future__ import annotations

import codecs
import io
import zipfile

import pytest

from gateway.agreement_terms import Terms, looser, make_terms, normalise, parse, render
from gateway.data_elements import HEAD_LIMIT, Contents, ContentScan, scan
from gateway.errors import PolicyError, UsageError

ROWS = "1,1980-01-02,K1A 0B1\n2,1990-03-04,M5V 2T6\n"


@pytest.mark.parametrize(("data", "form", "columns", "records"), [
    (b"hcn,birth_date,postal_code\n" + ROWS.encode(), "csv",
     ("hcn", "birth_date", "postal_code"), 2),
    (b'"Health Card","Birth ""Date""",postal_code\r\n1,"x, y",z\r\n', "csv",
     ("Health Card", 'Birth "Date"', "postal_code"), 1),
    (b"hcn;birth_date;postal_code\n1;2;3\n4;5;6\n7;8;9", "semicolon",
     ("hcn", "birth_date", "postal_code"), 3),
    (b"hcn\tbirth_date\n1\t2\n", "tsv", ("hcn", "birth_date"), 1),
    (codecs.BOM_UTF8 + b"hcn,birth_date\n1,2\n", "csv", ("hcn", "birth_date"), 1),
    (codecs.BOM_UTF16_LE + "hcn,birth_date\r\n1,2\r\n3,4\r\n".encode("utf-16-le"), "csv",
     ("hcn", "birth_date"), 2),
    (codecs.BOM_UTF16_BE + "hcn,birth_date\n1,2\n".encode("utf-16-be"), "csv",
     ("hcn", "birth_date"), 1),
    ("pr\xe9nom,nom\nA,B\n".encode("latin-1"), "csv", ("pr\xe9nom", "nom"), 1),
    (b"hcn,birth_date\n", "csv", ("hcn", "birth_date"), 0),
    (b"hcn,birth_date", "csv", ("hcn", "birth_date"), 0),
    (b"", "empty", (), 0),
    # A quoted value holding a line break counts twice: the count is an upper bound.
    (b'a,b\n"x\ny",2\n', "csv", ("a", "b"), 2),
], ids=["plain", "quoted-crlf", "semicolon-no-final-newline", "tab", "utf8-bom",
        "utf16le-bom-crlf", "utf16be-bom", "latin1", "header-only", "header-no-newline",
        "empty", "quoted-newlines"])
def test_reads_header_and_counts_records(data: bytes, form: str, columns: tuple[str, ...],
                                         records: int) -> None:
    whole = scan(data)
    assert (whole.format, whole.columns, whole.records) == (form, columns, records)
    # Fed one byte at a time, the result is the same.
    scanner = ContentScan()
    for index in range(len(data)):
        scanner.feed(data[index:index + 1])
    assert scanner.finish() == whole


def test_opaque_formats() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", "hcn\n1\n")
    assert scan(buffer.getvalue()).opaque
    assert scan(b"\x00\x01\x02binary\n").opaque
    assert scan(b"x" * (HEAD_LIMIT + 10)).opaque
    # A quoted header cell holding a line break is no column name.
    assert scan(b'"multi\nline",b\n1,2\n').opaque
    # A first line of values is not taken for names: nothing of it is recorded.
    headerless = scan(b"1234567890,1980-01-02,K1A\n")
    assert headerless.opaque and headerless.columns is None
    assert "1234567890" not in (headerless.reason or "")


def test_terms_normalise_and_alias() -> None:
    assert normalise(" Health Card-Number ") == "health_card_number"
    terms = make_terms("uni", columns=["HCN", "birth date", "postal_code"],
                       aliases={"pc": "postal_code"}, max_records=2)
    assert terms.columns == ("birth_date", "health_card_number", "postal_code")
    assert terms.outside(["Health_Card_Number", "DOB", "PC", "Name"]) == ["Name"]
    terms.check(scan(b"hcn,dob,pc\n1,2,3\n4,5,6\n"))
    with pytest.raises(PolicyError, match=r"outside .*: first_name, Sex"):
        terms.check(scan(b"hcn,first_name,Sex\n"))
    with pytest.raises(PolicyError, match="3 records, over the 2"):
        terms.check(scan(b"hcn\n1\n2\n3\n"))
    with pytest.raises(PolicyError, match="structure cannot be read"):
        terms.check(Contents("opaque", None, None, reason="zip"))
    with pytest.raises(UsageError, match="not agreed: mrn"):
        make_terms("uni", columns=["hcn"], aliases={"chart": "mrn"})


def test_published_terms_round_trip_and_looser() -> None:
    strict = make_terms("uni", columns=["hcn"], max_records=10, change_id=3)
    assert parse(render(strict)) == strict
    wide = make_terms("uni", columns=["hcn", "dob"], allow_opaque=True)
    assert looser(strict, wide) == ["columns birth_date", "max records unlimited (was 10)",
                                    "files of unknown structure"]
    assert looser(wide, strict) == []
    assert Terms("uni", ("hcn",)).element("HCN") == "health_card_number"
