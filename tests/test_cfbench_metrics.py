"""CFBench: the official file layout read (bad files as one line), CSR / ISR / PSR per row through
every branch of the PSR rule, the judge's reply format, and the means by split, type and subtype
with unscored rows kept apart. The rows are invented, in the official layout."""
import json

import pytest

from flows.cfbench.data import Criterion, load_rows, parse_row
from flows.cfbench.metrics import aggregate, parse_judge_reply, row_metrics
from flows.errors import InputError

P, S = "主需", "次需"


def crit(text, priority, kind="内容约束", subtype="元素内容约束"):
    return [text, priority, kind, subtype]


def raw_row(idx, criteria, split="easy", gold=""):
    return {"idx": idx, "prompt": f"写一段关于第{idx}号主题的文字。", "isanswer": "是" if gold else "否", "gold": gold,
            "doamin": "通用", "scenario": "写作", "source": "test", "split": split, "criteria": criteria}


ROWS = [
    raw_row(0, [crit("主题正确", P), crit("不少于50字", S, "数值约束", "单词数值约束"),
                crit("语气轻松", S, "风格约束", "语气情感约束")]),
    raw_row(1, [crit("是一首诗", P, "风格约束", "形式文体约束"), crit("押韵", P, "语言约束", "音节学语言约束")],
            split="hard", gold="床前明月光"),
    raw_row(2, [crit(f"要点{i}", S, "", "") for i in range(5)], split="hard"),
]


def write(tmp_path, rows, name="cfbench_data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def test_the_official_layout_loads_into_rows(tmp_path):
    rows = load_rows(write(tmp_path, ROWS))
    assert [r.id for r in rows] == [0, 1, 2] and [r.split for r in rows] == ["easy", "hard", "hard"]
    assert rows[0].gold is None and rows[1].gold == "床前明月光"
    assert rows[0].criteria[1] == Criterion("不少于50字", S, "数值约束", "单词数值约束")
    assert rows[2].criteria[0].type == "" and len(rows[2].criteria) == 5


@pytest.mark.parametrize("mutate, where, says", [
    (lambda rows: rows[1].pop("idx"), "row 2", "'idx' must be an integer"),
    (lambda rows: rows[0].update(idx=True), "row 1", "'idx' must be an integer"),
    (lambda rows: rows[2].update(idx=0), "row 3", "'idx': 0 is also row 1"),
    (lambda rows: rows[0].update(prompt=None), "row 1", "'prompt' must be a string"),
    (lambda rows: rows[1].update(split="medium"), "row 2", "'split' must be 'easy' or 'hard'"),
    (lambda rows: rows[0].update(gold=3), "row 1", "'gold' must be a string or null"),
    (lambda rows: rows[0].update(criteria=[]), "row 1", "'criteria' must be a non-empty list"),
    (lambda rows: rows[1]["criteria"][1].pop(), "row 2", "'criteria[1]' must be a list of four strings"),
    (lambda rows: rows[0]["criteria"][2].__setitem__(1, "主要"), "row 1", "'criteria[2]': priority must be"),
    (lambda rows: rows[2]["criteria"][0].__setitem__(0, " "), "row 3", "'criteria[0]': the criterion text is empty"),
    (lambda rows: rows.__setitem__(1, "not an object"), "row 2", "expected a JSON object"),
])
def test_a_bad_row_is_one_line_naming_file_row_and_field(tmp_path, mutate, where, says):
    rows = json.loads(json.dumps(ROWS))
    mutate(rows)
    path = write(tmp_path, rows)
    with pytest.raises(InputError) as err:
        load_rows(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: {where}: ") and says in message


def test_a_bad_file_is_one_line(tmp_path):
    for content, says in (("[{", "not JSON (line 1"), ('{"idx": 0}', "expected a JSON array"), ("[]", "no rows")):
        path = tmp_path / "x.json"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(InputError, match=r"^" + str(path).replace("\\", "\\\\") + ": " + says.replace("(", r"\(")):
            load_rows(path)
    with pytest.raises(InputError, match="no such file"):
        load_rows(tmp_path / "missing.json")


def one(priorities):
    """A row (idx 9) whose criteria c0, c1 ... have these priorities."""
    return parse_row(raw_row(9, [crit(f"c{i}", p) for i, p in enumerate(priorities)]), "row 1")


@pytest.mark.parametrize("priorities, scores, expected", [
    # a primary missed: PSR 0, however much else is met
    ([P, S, S, S, S, S], [0, 1, 1, 1, 1, 1], {"CSR": 5 / 6, "ISR": 0, "PSR": 0}),
    ([P, P], [1, 0], {"CSR": 0.5, "ISR": 0, "PSR": 0}),
    # primaries only, all met
    ([P, P], [1, 1], {"CSR": 1.0, "ISR": 1, "PSR": 1}),
    # secondaries only: CSR > 0.8
    ([S] * 6, [1, 1, 1, 1, 1, 0], {"CSR": 5 / 6, "ISR": 0, "PSR": 1}),
    ([S] * 5, [1, 1, 1, 1, 0], {"CSR": 0.8, "ISR": 0, "PSR": 0}),  # exactly 0.8 is not enough
    ([S] * 2, [1, 1], {"CSR": 1.0, "ISR": 1, "PSR": 1}),
    # both, primaries met: 0.5 + 0.5 * mean(secondary) > 0.8
    ([P, S, S, S], [1, 1, 1, 0], {"CSR": 0.75, "ISR": 0, "PSR": 1}),  # 0.5 + 0.5 * 2/3 = 0.83
    ([P, S, S, S, S, S], [1, 1, 1, 1, 0, 0], {"CSR": 4 / 6, "ISR": 0, "PSR": 0}),  # 0.5 + 0.5 * 0.6 = 0.8
    ([P, S, S], [1, 1, 0], {"CSR": 2 / 3, "ISR": 0, "PSR": 0}),  # 0.75
    ([P, S], [1, 1], {"CSR": 1.0, "ISR": 1, "PSR": 1}),
])
def test_psr_follows_the_official_rule_on_every_branch(priorities, scores, expected):
    assert row_metrics(one(priorities), scores) == expected


def test_verdicts_that_do_not_fit_the_row_are_an_error():
    row = one([P, S])
    with pytest.raises(InputError, match="idx 9: 3 for 2 criteria"):
        row_metrics(row, [1, 1, 1])
    with pytest.raises(InputError, match="criterion 1 must be 0 or 1, not '1'"):
        row_metrics(row, [1, "1"])
    with pytest.raises(InputError, match="criterion 0 must be 0 or 1, not 2"):
        row_metrics(row, [2, 1])
    with pytest.raises(InputError, match="a verdict is missing"):
        row_metrics(row, [1, None])


def test_the_judge_reply_counts_only_in_the_official_format():
    row = one([P, S, S])
    assert parse_judge_reply("c0\t1\n\nc1\t0\n\nc2\t1", row) == [1, 0, 1]
    assert parse_judge_reply("c0\t1\n\nc1\t0\n\nc2\t1.0\n", row) == [1, 0, 1]
    for bad in ("c0\t1\n\nc1\t0",                 # a criterion missing
                "c0\t1\nc1\t0\nc2\t1",            # not separated by blank lines
                "c0\t1\n\nc1 \t0\n\nc2\t1",       # the criterion's text changed
                "c0\t1\n\nc1\t0\n\nc2\t2",        # not 0 or 1
                "c0\t1\n\nc1\t否\n\nc2\t1",       # not a number
                "c0 1\n\nc1\t0\n\nc2\t1",         # no tab
                "", None):
        assert parse_judge_reply(bad, row) is None, bad


def test_means_by_split_type_and_subtype_and_unscored_rows_apart(tmp_path):
    rows = load_rows(write(tmp_path, ROWS + [raw_row(3, [crit("x", P)], split="easy"),
                                             raw_row(4, [crit("y", S), crit("z", S)], split="hard")]))
    verdicts = {0: [1, 1, 0], 1: [1, 0], 2: [1, 1, 1, 1, 1], 3: None, 4: [1, None]}  # 3, 4 not scored
    m = aggregate(rows, verdicts)
    assert m["rows"] == 5 and m["scored"] == 3 and m["unscored"] == [3, 4]
    # row 0: CSR 2/3, ISR 0, PSR 0 (0.5 + 0.5 * 0.5); row 1: 0.5, 0, 0; row 2: 1, 1, 1
    assert m["easy"] == {"n": 1, "CSR": 0.6667, "ISR": 0.0, "PSR": 0.0}
    assert m["hard"] == {"n": 2, "CSR": 0.75, "ISR": 0.5, "PSR": 0.5}
    assert m["full"] == {"n": 3, "CSR": round((2 / 3 + 0.5 + 1) / 3, 4), "ISR": 0.3333, "PSR": 0.3333}
    assert m["by_type"]["风格约束"] == {"n": 2, "met": 1, "rate": 0.5}  # row 0 语气轻松 (0), row 1 是一首诗 (1)
    assert m["by_type"]["(none)"] == {"n": 5, "met": 5, "rate": 1.0}
    assert m["by_subtype"]["音节学语言约束"] == {"n": 1, "met": 0, "rate": 0.0}
    assert m["by_subtype"]["元素内容约束"] == {"n": 1, "met": 1, "rate": 1.0}  # row 3's criterion is not counted
    nobody = aggregate(rows, {})
    assert nobody["scored"] == 0 and nobody["full"] == {"n": 0, "CSR": None, "ISR": None, "PSR": None}
