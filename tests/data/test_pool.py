"""Pool loading, validation, example ids and round trips."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from inflow.data.pool import MESSAGES_DTYPE, content_hash, load_pool, pool_texts, write_pool_jsonl
from inflow.errors import InputError

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
OTHER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}]


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_columns_types_and_metadata(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "pool.jsonl", [
        {"id": "a", "dataset": "flan", "messages": CHAT, "harmful": False, "family": "qa", "n": 3,
         "meta": {"k": [1, 2]}},
        {"dataset": "cot", "messages": OTHER, "harmful": True, "family": "math", "n": 7, "meta": {"k": []}},
        {"id": 17, "messages": CHAT + OTHER[1:], "harmful": None},
    ])
    df = load_pool(path)
    assert df.columns == ["example_id", "dataset", "messages", "harmful", "family", "n", "meta"]
    assert df.schema["messages"] == MESSAGES_DTYPE
    assert df.schema["harmful"] == pl.Boolean and df.schema["n"] == pl.Int64 and df.schema["family"] == pl.String
    assert df["example_id"].to_list() == ["a", content_hash(OTHER), "17"]
    assert df["dataset"].to_list() == ["flan", "cot", ""]
    assert df["harmful"].to_list() == [False, True, None]
    assert df["meta"].to_list() == [{"k": [1, 2]}, {"k": []}, None]
    assert df["messages"][1].to_list() == OTHER


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "pool.jsonl", [
        {"id": "a", "dataset": "flan", "messages": CHAT, "flag": True, "tags": ["x"], "score": 0.5},
        {"messages": OTHER, "flag": False, "tags": [], "score": 2.0, "extra": "only here"},
    ])
    df = load_pool(source)
    out = tmp_path / "sub" / "copy.jsonl"
    write_pool_jsonl(df, out)
    again = load_pool(out)
    assert again.equals(df)
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert list(first)[:3] == ["id", "dataset", "messages"] and first["id"] == "a"
    assert not (tmp_path / "sub" / "copy.jsonl.tmp").exists()


def test_content_hash_is_canonical_sha256() -> None:
    canonical = '[{"content":"Hi","role":"user"},{"content":"Hello!","role":"assistant"}]'
    expected = "h" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert content_hash(CHAT) == expected
    reordered = [{"content": m["content"], "role": m["role"]} for m in CHAT]
    assert content_hash(reordered) == expected
    assert content_hash(CHAT[:1] + [{"role": "assistant", "content": "Hello"}]) != expected


def test_example_id_stable_across_key_order_and_files(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [{"messages": CHAT, "dataset": "d"}])
    b = write_lines(tmp_path / "b.jsonl", [
        '{"dataset": "other", "messages": [{"content": "Hi", "role": "user"}, '
        '{"content": "Hello!", "role": "assistant", "name": "bot"}]}'])
    assert load_pool(a)["example_id"][0] == load_pool(b)["example_id"][0] == content_hash(CHAT)


GOOD = json.dumps({"id": "ok", "messages": CHAT})
BAD_ROWS = {
    "invalid JSON": ('{"messages": [', "invalid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object"),
    "missing messages": (json.dumps({"id": "x"}), "no 'messages'"),
    "empty messages": (json.dumps({"messages": []}), "non-empty list"),
    "bad role": (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "role 'bot'"),
    "non-string content": (json.dumps({"messages": [{"role": "assistant", "content": 3}]}), "not a string"),
    "message not object": (json.dumps({"messages": ["hi"]}), "is not an object"),
    "no assistant": (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant message"),
    "duplicate id": (json.dumps({"id": "ok", "messages": OTHER}), "duplicate id 'ok' (also on line 1)"),
    "bad id": (json.dumps({"id": ["x"], "messages": OTHER}), "'id' must be a non-empty string"),
    "bad dataset": (json.dumps({"dataset": 5, "messages": OTHER}), "'dataset' must be a string"),
    "mixed metadata": (json.dumps({"messages": OTHER, "n": "seven"}), "column 'n' is string here but number on line 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_and_line(tmp_path: Path, case: str) -> None:
    bad, reason = BAD_ROWS[case]
    first = json.dumps({"id": "ok", "messages": CHAT, "n": 1})
    path = write_lines(tmp_path / "pool.jsonl", [first, bad])
    with pytest.raises(InputError) as info:
        load_pool(path)
    assert f"{path}:2: " in str(info.value)
    assert reason in str(info.value)
    assert info.value.line == 2


def test_identical_rows_without_id_name_both_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "pool.jsonl", [{"messages": OTHER}, {"messages": CHAT}, {"messages": OTHER}])
    with pytest.raises(InputError, match=r"pool.jsonl:3: same content as line 1"):
        load_pool(path)


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "pool.jsonl", [GOOD, "", "   ", '{"messages": 1}'])
    with pytest.raises(InputError, match=r"pool.jsonl:4: "):
        load_pool(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match="no rows"):
        load_pool(path)


def test_json_array_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps([{"messages": CHAT}], indent=1))
    with pytest.raises(InputError, match="looks like one JSON array"):
        load_pool(path)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "pool.csv"
    path.write_text("x")
    with pytest.raises(InputError, match="unknown pool format"):
        load_pool(path)
    with pytest.raises(InputError, match="no such file"):
        load_pool(tmp_path / "absent.jsonl")


def test_parquet_input(tmp_path: Path) -> None:
    table = pl.DataFrame({
        "id": ["p1", None],
        "messages": pl.Series([CHAT, OTHER], dtype=MESSAGES_DTYPE),
        "family": ["qa", "math"],
        "harmful": [True, False],
    })
    path = tmp_path / "pool.parquet"
    table.write_parquet(path)
    df = load_pool(path)
    assert df.columns == ["example_id", "dataset", "messages", "family", "harmful"]
    assert df["example_id"].to_list() == ["p1", content_hash(OTHER)]
    assert df["dataset"].to_list() == ["", ""]
    assert df["harmful"].to_list() == [True, False]
    assert df["messages"][0].to_list() == CHAT


def test_parquet_bad_row_names_the_row(tmp_path: Path) -> None:
    table = pl.DataFrame({"messages": pl.Series([CHAT, CHAT[:1]], dtype=MESSAGES_DTYPE)})
    path = tmp_path / "pool.parquet"
    table.write_parquet(path)
    with pytest.raises(InputError, match=r"pool.parquet:2: 'messages' has no assistant message"):
        load_pool(path)


def test_pool_texts_render_each_row(tmp_path: Path) -> None:
    df = load_pool(write_lines(tmp_path / "pool.jsonl", [{"messages": CHAT}, {"messages": OTHER}]))
    assert pool_texts(df, "</s>") == [
        "<|user|>\nHi\n<|assistant|>\nHello!</s>\n",
        "<|system|>\nBe brief.\n<|user|>\n2+2?\n<|assistant|>\n4</s>\n",
    ]
