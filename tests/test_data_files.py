"""Local data files: every valid CSV/JSON/JSONL/Parquet file loads (long fields, quoted
newlines, a byte-order mark, CRLF), and a broken one is refused naming the file and the row
or line. The files are written by the tests."""

from __future__ import annotations

import json

import pytest
from helpers.configs import small_config

from agents.cory import CoryTrainer
from cory_env.tasks import make_task
from cory_env.tasks.loading import DataFileError, read_records

BOM = "\ufeff"
LONG = "word " * 300_000  # 1.5 MB in one field
TRICKY = [
    'a "quoted" word, and a comma',
    "two\nlines",
    "crlf\r\ninside",
    "  leading and trailing spaces  ",
    "",
    "NA",
    "007",
    "true",
]


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def csv_text(rows: list[dict[str, str]], newline: str = "\n", bom: bool = False) -> str:
    """A CSV file as a spreadsheet writes it: every field quoted, quotes doubled."""
    names = list(rows[0])

    def line(values) -> str:
        return ",".join('"' + str(v).replace('"', '""') + '"' for v in values)

    body = newline.join([line(names), *(line(r[n] for n in names) for r in rows)]) + newline
    return (BOM if bom else "") + body


# ------------------------------------------------------------------ valid files load


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_a_csv_loads_as_the_text_it_holds(tmp_path, newline, bom):
    rows = [{"text": t, "id": str(i)} for i, t in enumerate(TRICKY)]
    path = write(tmp_path / "p.csv", csv_text(rows, newline, bom))
    assert read_records(path) == rows  # no BOM in "text", no type guessing, fields intact


def test_a_csv_without_quotes_and_with_crlf_and_a_bom(tmp_path):
    path = write(tmp_path / "p.csv", f"{BOM}prompt,n\r\nhello,1\r\nworld,2\r\n\r\n")
    assert read_records(path) == [{"prompt": "hello", "n": "1"}, {"prompt": "world", "n": "2"}]


def test_a_csv_field_over_a_megabyte_loads_whole(tmp_path):
    path = write(tmp_path / "p.csv", csv_text([{"text": LONG}, {"text": "short"}]))
    assert read_records(path) == [{"text": LONG}, {"text": "short"}]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_json_lines_load(tmp_path, newline, bom):
    rows = [{"text": t, "n": i} for i, t in enumerate([*TRICKY, LONG, "line\u2028separator"])]
    lines = newline.join(json.dumps(r) for r in rows) + newline + newline  # a blank line
    path = write(tmp_path / "p.jsonl", (BOM if bom else "") + lines)
    assert read_records(path) == rows


def test_json_lines_with_a_column_of_mixed_types_load(tmp_path):
    path = write(tmp_path / "p.jsonl", '{"answer": 18}\n{"answer": "eighteen"}\n{"other": null}\n')
    assert read_records(path) == [{"answer": 18}, {"answer": "eighteen"}, {"other": None}]


@pytest.mark.parametrize(
    "document",
    [
        [{"text": "a"}, {"text": LONG}],
        {"text": ["a", LONG]},  # a dict of columns
    ],
)
def test_a_json_document_loads(tmp_path, document):
    path = write(tmp_path / "p.json", BOM + json.dumps(document, indent=2).replace("\n", "\r\n"))
    assert read_records(path) == [{"text": "a"}, {"text": LONG}]


def test_a_json_file_of_json_lines_and_a_single_record(tmp_path):
    lines = write(tmp_path / "lines.json", '{"text": "a"}\n{"text": "b"}\n')
    one = write(tmp_path / "one.json", '{\n  "text": "a"\n}\n')
    assert read_records(lines) == [{"text": "a"}, {"text": "b"}]
    assert read_records(one) == [{"text": "a"}]


def test_parquet_loads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [*TRICKY, LONG], "n": list(range(9))}), tmp_path / "p.parquet")
    assert read_records(tmp_path / "p.parquet") == [
        {"text": t, "n": i} for i, t in enumerate([*TRICKY, LONG])
    ]


def test_local_files_never_go_through_the_hub_loader(tmp_path, monkeypatch):
    """Local files are read by pyarrow directly: no ``datasets`` builder, no cache written."""
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub loader"))
    for name, text in [("p.csv", "text\na\n"), ("p.jsonl", '{"text": "a"}\n')]:
        assert read_records(write(tmp_path / name, text)) == [{"text": "a"}]


def test_empty_json_files_have_no_rows(tmp_path):
    assert read_records(write(tmp_path / "e.jsonl", "\n\n")) == []
    assert read_records(write(tmp_path / "e.json", BOM)) == []
    assert read_records(write(tmp_path / "h.csv", "text,n\n")) == []  # a header, no rows
    assert read_records(write(tmp_path / "h2.csv", "text,n")) == []
    assert read_records(write(tmp_path / "last.csv", "text\r\na")) == [{"text": "a"}]


# ------------------------------------------------------------------ broken files are refused


@pytest.mark.parametrize(
    ("name", "text", "row", "line", "problem"),
    [
        (
            "many.csv",
            "text,n\na,1\nb,2,3\nc,4\n",
            3,
            None,
            r"expected 2 columns, got 3 \('b,2,3'\)",
        ),
        ("few.csv", "text,n\na,1\nb\n", 3, None, "expected 2 columns, got 1"),
        ("quote.csv", 'text\na\n"b\nc\n', None, 3, "a quote opened here is never closed"),
        ("quote2.csv", 'text,n\na,1\nb,2\n"c,3\nd,4\n', None, 4, "never closed"),
        ("bytes.csv", b"text\nok\n\xff\xfe\n", 3, None, "not UTF-8 in column 'text'"),
        ("twice.csv", "text,text\na,b\n", None, None, r"column\(s\) \['text'\] more than once"),
        ("empty.csv", "", None, None, "empty file"),
        ("bad.jsonl", '{"text": "a"}\n\n{"text": }\n{"text": "c"}\n', None, 3, "invalid JSON"),
        ("first.jsonl", '{"text": "a",}\n{"text": "b"}\n', None, 1, "invalid JSON"),
        ("list.jsonl", '{"text": "a"}\n["b"]\n', None, 2, "expected a JSON object"),
        ("bytes.jsonl", b'{"text": "a"}\n{"text": "\xff"}\n', None, 2, "not UTF-8"),
        ("bad.json", '[{"text": "a"},\n {"text": "b"]\n', None, 2, "invalid JSON"),
        ("lines.json", '{"text": "a"}\n{"text": "b"}\n{"text" "c"}\n', None, 3, "invalid JSON"),
        ("items.json", '[{"text": "a"}, "b"]', None, None, "item 1 of the list is a str"),
        ("bad.parquet", "not parquet", None, None, "not a readable Parquet file"),
    ],
)
def test_a_broken_file_is_refused_naming_the_file_and_row(tmp_path, name, text, row, line, problem):
    path = write(tmp_path / name, text)
    with pytest.raises(DataFileError, match=problem) as caught:
        read_records(path)
    error = caught.value
    assert isinstance(error, ValueError) and error.path == path
    assert (error.row, error.line) == (row, line)
    message = str(error)
    assert message.startswith(f"{path}:")
    if row is not None:
        assert f"row {row} (counting the header as row 1)" in message
    if line is not None:
        assert f"line {line}:" in message


# ------------------------------------------------------------------ through the tasks


def test_the_tasks_read_what_the_csv_module_refused(tmp_path):
    """A BOM before the first column's name, and a field over the csv module's default
    field limit (128 KB): both load, through ``imdb`` and ``prompts``."""
    review = "A film worth seeing twice. " + "x" * 200_000
    path = write(
        tmp_path / "r.csv", csv_text([{"review": review}, {"review": review}], "\r\n", True)
    )
    task = make_task("imdb", path=path, eval_fraction=0.0)
    assert len(task.train_queries) == 2
    assert all(review.startswith(q) and 2 <= len(q.split()) <= 8 for q in task.train_queries)
    prompts = make_task("prompts", path=path, column="review", eval_fraction=0.0, reward="vader")
    assert [str(q) for q in prompts.train_queries] == [review, review]


def test_a_run_on_a_broken_file_stops_before_the_model_loads(tmp_path, monkeypatch):
    from agents.run import setup

    path = write(tmp_path / "p.csv", "text\na\nb,c\n")
    config = small_config(
        tmp_path, task="prompts", task_path=str(path), reward="vader", model="no/such-model"
    )
    monkeypatch.setattr(setup, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DataFileError, match=r"p\.csv: row 3 .*expected 1 columns, got 2"):
        CoryTrainer(config)
