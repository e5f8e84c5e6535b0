"""ComplexBench: the official file layout read (bad files as one line), every rule form passing
and failing with the official conventions, the extractor's reply read into segments, and DRFR
with dependencies, its breakdowns and the coherent test over Selection groups. The rows are
invented, in the official layout."""
import json

import pytest

from flows.complexbench.data import load_rows
from flows.complexbench.metrics import aggregate, constraint_type, with_dependencies
from flows.complexbench.rules import FORMS, check, extracted_segments, parse_rule
from flows.errors import InputError


def question(point_id, dims, dep=(), comps=(), rule=None):
    return {"point_id": point_id, "question": f"问题{point_id}？", "question_en": f"Question {point_id}?",
            "rule": rule, "constraint_dimensions": list(dims), "composition_types": list(comps), "dep": list(dep)}


def selection_row(main_id, group, idx):
    """Selection_1: q0 decides the branch; q1, q2 depend on it; q3 has two Structure dimensions."""
    return {"main_id": main_id, "group": group, "idx_in_group": idx,
            "instruction": f"判断案例{main_id}是否符合条件，如果符合，写一段不超过5个字的说明。",
            "instruction_en": f"Decide whether case {main_id} qualifies; if so, explain in at most 5 characters.",
            "task_types": "Professional Writing", "constraint_dimensions": ["Factuality", "Length"],
            "composition_types": ["Selection", "And"], "category": "Selection_1",
            "scoring_questions": [question(0, ["Factuality"], comps=["Selection"]),
                                  question(1, ["Helpfulness"], dep=[0]),
                                  question(2, ["Length"], dep=[0], rule="model_length:[1,5]"),
                                  question(3, ["Length", "Bullets Format"])]}


def nested_row(main_id, group):
    """Selection_2: two Selection questions, a third depending on both, of an unknown dimension."""
    return {"main_id": main_id, "group": group, "idx_in_group": main_id - 3, "instruction": f"先判断再选择{main_id}。",
            "task_types": "Logical Reasoning", "constraint_dimensions": ["Factuality"],
            "composition_types": ["Selection", "Selection"], "category": "Selection_2",
            "scoring_questions": [question(0, ["Factuality"], comps=["Selection"]),
                                  question(1, ["Factuality"], comps=["Selection"]),
                                  question(2, ["Odd Dimension"], dep=[0, 1])]}


CHAIN = {"main_id": 3, "group": None, "instruction": "先写一个主题，再按主题写一段话，最后用“春天”结尾。",
         "instruction_en": "...", "task_types": "Creative Writing", "constraint_dimensions": ["Topic"],
         "composition_types": ["Chain"], "category": "Chain_2",
         "scoring_questions": [question(0, ["Topic"], comps=["Chain"]), question(1, ["Sentiment"], dep=[0]),
                               question(2, ["Word Matching"], dep=[1], rule="model_endswith:春天")]}
ROWS = [selection_row(1, "g1", 1), selection_row(2, "g1", 2), CHAIN, nested_row(4, "g2"), nested_row(5, "g2"),
        selection_row(6, "g3", 1)]


def write(tmp_path, rows):
    path = tmp_path / "data_final.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def test_the_official_layout_loads_into_rows(tmp_path):
    rows = load_rows(write(tmp_path, ROWS))
    assert [r.id for r in rows] == [1, 2, 3, 4, 5, 6]
    first, chain, nested = rows[0], rows[2], rows[3]
    assert first.group == "g1" and first.idx_in_group == 1 and first.category == "Selection_1"
    assert first.questions[2].rule.form == "model_length" and first.questions[2].rule.args == (1, 5)
    assert first.questions[1].rule is None and first.questions[1].dep == (0,)
    assert chain.group is None and chain.idx_in_group is None and chain.questions[2].dep == (1,)
    assert nested.instruction_en is None and nested.compositions == ("Selection", "Selection")


@pytest.mark.parametrize("mutate, where, says", [
    (lambda rows: rows[1]["scoring_questions"][1].update(rule="model_colour:[red]"),
     "row 2: field 'scoring_questions[1].rule'", "unknown rule form 'model_colour'"),
    (lambda rows: rows[0]["scoring_questions"][2].update(rule="model_length:[300]"),
     "row 1: field 'scoring_questions[2].rule': model_length", "expected [low,high]"),
    (lambda rows: rows[2]["scoring_questions"][2].update(dep=[5]),
     "row 3", "'scoring_questions[2].dep': 5 is not another question of the row (0-2)"),
    (lambda rows: rows[2]["scoring_questions"][1].update(dep=[1]),
     "row 3", "'scoring_questions[1].dep': 1 is not another question"),
    (lambda rows: rows[3]["scoring_questions"][1].update(point_id=7),
     "row 4", "'scoring_questions[1].point_id' must be 1 (its position), not 7"),
    (lambda rows: rows[3]["scoring_questions"][0].update(composition_types="Selection"),
     "row 4: scoring_questions[0]", "'composition_types' must be a list of names"),
    (lambda rows: rows[4].pop("instruction"), "row 5", "'instruction' must be a non-empty string"),
    (lambda rows: rows[0].update(main_id="1"), "row 1", "'main_id' must be an integer"),
    (lambda rows: rows[5].update(main_id=2), "row 6", "'main_id': 2 is also row 2"),
    (lambda rows: rows[0].update(group=7), "row 1", "'group' must be a string or null"),
    (lambda rows: rows[2].update(scoring_questions=[]), "row 3", "'scoring_questions' must be a non-empty list"),
    (lambda rows: rows[2].update(category=None), "row 3", "'category' must be a non-empty string"),
])
def test_a_bad_row_is_one_line_naming_file_row_and_field(tmp_path, mutate, where, says):
    rows = json.loads(json.dumps(ROWS))
    mutate(rows)
    path = write(tmp_path, rows)
    with pytest.raises(InputError) as err:
        load_rows(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: {where}") and says in message, message


# ------------------------------------------------------------------------------------ rules

# (rule, segments, verdict): each form passing and failing, and the official conventions
RULE_CASES = [
    ("model_keyword:[春天,花]", ["春天的花开了"], True),
    ("model_keyword:[春天,花]", ["春天来了"], False),
    ("model_keyword:[春天]", ["夏天", "春天"], False),  # the first segment only
    ("model_keyword:[春天]", [], False),
    ("model_keyword_each:[春]", ["春风", "春雨", ""], True),  # empty segments are skipped
    ("model_keyword_each:[春]", ["春风", "夏雨"], False),
    ("model_keyword_each:[春]", [""], False),
    ("model_keyword_num:[2,3,春,夏,秋,冬]", ["春夏春春"], True),
    ("model_keyword_num:[2,3,春,夏,秋,冬]", ["春春春"], False),  # a keyword counts once
    ("model_keyword_num_each:[1,1,春,夏]", ["春天", "夏天"], True),
    ("model_keyword_num_each:[1,1,春,夏]", ["春天", "春夏"], False),
    ("model_keyword_num_each:[1,1, 春]", ["春天"], False),  # its keywords keep their spaces
    ("model_keyword_num_each:[1,1, 春]", ["一 春天"], True),
    ("model_keyword_num_each:[1,2,春,夏]\nmodel_forbidden_word_each:[冬]", ["春天", "夏天"], True),
    ("model_keyword_num_each:[1,2,春,夏]\nmodel_forbidden_word_each:[冬]", ["春天", "夏冬"], False),
    ("model_keyword_num_each:[1,2,春,夏]\nmodel_forbidden_word_each:[冬]", [], False),
    ("model_forbidden_word:[冬]", ["春天", "冬天"], True),  # the first segment only
    ("model_forbidden_word:[冬]", ["冬天"], False),
    ("model_forbidden_word:[冬]", [], True),  # nothing extracted: nothing forbidden
    ("model_forbidden_word_each:[冬,雪]", ["春", "夏"], True),
    ("model_forbidden_word_each:[冬,雪]", ["春", "大雪"], False),
    ("model_forbidden_word_each:[冬]", [""], True),
    ("model_number_each:[3,3]", ["甲", "乙", "丙"], True),
    ("model_number_each:[3,3]", ["甲", "乙"], False),
    ("model_number_each:[0,3]", [], False),
    ("model_length:[3,5]", ["春夏秋"], True),
    ("model_length:[3,5]", ["春夏"], False),
    ("model_length:[3,3]", ["a b"], True),  # characters: the space counts
    ("model_length:[3,5]", ['\n"春夏秋冬"'], True),  # 7 as it is, 4 without the line break and quotes
    ("model_length:[1,10]", [""], False),
    ("model_length_each:[2,3]", ["春夏", "秋冬天"], True),
    ("model_length_each:[2,3]", ["春夏", "秋"], False),
    ("model_length_word:[3,3]", ["one two three"], True),
    ("model_length_word:[2,3]", ["春夏秋冬"], False),  # Chinese without spaces is one word
    ("model_length_word_each:[2,2]", ["a b", "c d"], True),
    ("model_length_word_each:[2,2]", ["a b", "c"], False),
    ("model_startswith:尊敬的", ["尊敬的各位"], True),
    ("model_startswith:尊敬的", ["各位尊敬的"], False),
    ("model_startswith:你好!", ["你好！世界"], True),  # ! and ！ are one mark
    ("model_startswith_each:场景", ["场景1", "场景2"], True),
    ("model_startswith_each:场景", ["场景1", "情景2"], False),
    ("model_starts_with_list_each:[一,二]", ["一是", "二是"], True),
    ("model_starts_with_list_each:[一,二]", ["一是", "三是"], False),
    ("model_starts_with_list_each:[一,二]", ["一是"], False),  # as many segments as items
    ("model_endswith:完成", ["任务完成。"], True),  # X。 and X？ end with X
    ("model_endswith:完成", ["完成了"], False),
    ("model_endswith_each:。", ["甲。", "乙。", "丙"], True),  # the last of several is not checked
    ("model_endswith_each:。", ["甲。", "乙", "丙。"], False),
    ("model_endswith_each:。", ["丙"], False),
    ("model_startswith:开始\nmodel_endswith:结束", ["开始吧，结束"], True),
    ("model_startswith:开始\nmodel_endswith:结束", ["开始吧"], False),
    ("model_not_startswith:我", ["你好"], True),
    ("model_not_startswith:我", ["我好"], False),
    ("model_not_startswith:我", [], True),
    ("model_not_endswith:吗", ["好的"], True),
    ("model_not_endswith:吗", ["好吗？"], False),
    ("model_not_endswith_each:了", ["好的", "走吧"], True),
    ("model_not_endswith_each:了", ["好的", "走了。"], False),
    ("model_not_endswith_each:了", [], True),
    ("model_constraint_punc:[，,。]", ["春天，来了。"], True),
    ("model_constraint_punc:[，,。]", ["春天！"], False),
    ("model_constraint_punc:[，,。]", ["春天!"], True),  # officially the segment is not folded here: ASCII ! unseen
    ("model_constraint_punc:[。]", ["春、夏。"], True),  # 、 is not one of the marks looked at
    ("model_constraint_punc_each:[。]", ["春。", "夏、"], True),
    ("model_constraint_punc_each:[。]", ["春。", "夏!"], False),
    ("keyword:[春天]", ["春天来了"], True),
    ("keyword:[春天]", ["夏天"], False),
    ("keyword:[春天]", ["春天 None"], False),  # "None" in the text fails a plain rule
    ("keyword:[春天]", [], False),
    ("forbidden_word:[冬]", ["春天"], True),
    ("forbidden_word:[冬]", ["冬天"], False),
    ("forbidden_word:[冬]", [], True),
    ("constraint_punc:[。]", ["春."], True),  # . is folded to 。
    ("constraint_punc:[。]", ["春,"], False),
    ("startswith:从前", ['\n"从前有座山"'], True),  # plain forms also try the trimmed text
    ("startswith:从前", ["后来"], False),
    ("endswith:谢谢", ["非常感谢，谢谢？"], True),
    ("endswith:谢谢", ["谢谢你"], False),
    ("not endswith:吗", ["好的"], True),
    ("not endswith:吗", ["是吗"], False),
    ("not endswith:吗", [], True),
    ("startswith:亲爱的\nendswith:此致", ["亲爱的朋友，此致"], True),
    ("startswith:亲爱的\nendswith:此致", ["亲爱的朋友"], False),
    ("length:[2,4]", ["春夏秋"], True),
    ("length:[2,4]", ["春夏秋冬天"], False),
    ("length_word:[2,2]", ["hello world"], True),
    ("length_word:[2,2]", ["hello"], False),
    ("match:是", ["是。"], True),
    ("match:是", ["是的"], False),
    ("match:A.", ["A."], False),  # officially the target is not folded, the text is
    ('Json:["name","age"]', ['结果：{"name": "a", "age": 3}'], True),
    ('Json:["name","age"]', ['{"name": "a"}'], False),
    ('Json:["name","age"]', ['{"name": "a", "age": 3, "x": 1}'], False),  # exactly these keys
    ("Json:[]", ['{"x": {"y": 1}}'], True),
    ("Json:[]", ["[1, 2]"], False),
]


def test_every_rule_form_is_exercised_passing_and_failing():
    seen = {}
    for rule, _, verdict in RULE_CASES:
        seen.setdefault(parse_rule(rule, "case").form, set()).add(verdict)
    assert set(seen) == set(FORMS) and all(v == {True, False} for v in seen.values())


@pytest.mark.parametrize("rule, segments, verdict", RULE_CASES)
def test_rule_verdicts(rule, segments, verdict):
    assert check(parse_rule(rule, "case"), segments) is verdict


def test_the_form_is_read_from_the_prefix_not_from_words_in_the_rule():
    rule = parse_rule("keyword:[teacher]", "case")  # "each" inside: officially left undecided (met)
    assert rule.form == "keyword"
    assert check(rule, ["the teacher said"]) and not check(rule, ["a student"])


@pytest.mark.parametrize("rule, says", [
    ("model_colour:[red]", "unknown rule form 'model_colour'"),
    ("", "unknown rule form ''"),
    ("length:[a,b]", "is not a list"),
    ("model_length:[1]", "expected [low,high]"),
    ("model_keyword_num:[x,2,春]", "expected [low,high,keyword,...]"),
    ("model_keyword:春,夏", "expected a [..] list on one line"),
    ("keyword:[春]\nforbidden_word:[冬]", "forms 'keyword' and 'forbidden_word' cannot be combined"),
    ("match:是\n否", "the text to match must be one line"),
    ("Json:{a}", "is not a list"),
    ("Json:[1, 2]", "expected a list of key names"),
])
def test_a_rule_that_cannot_be_read_is_one_line(rule, says):
    with pytest.raises(InputError) as err:
        parse_rule(rule, "data.json: row 4: field 'scoring_questions[0].rule'")
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.json: row 4: field 'scoring_questions[0].rule'")
    assert says in message, message


@pytest.mark.parametrize("reply, segments", [
    ("【解释】\n评分对象是整个回复。\n\n【模型回复中评分问题的评测对象】\n评分对象：all", ["全文。"]),
    ("【解释】\n评分对象：不是这个\n\n【模型回复中评分问题的评测对象】\n评分对象：甲。", ["甲。"]),
    ("【模型回复中评分问题的评测对象】\n评分对象：None", []),
    ("评分对象：甲。||乙。 || 丙。", ["甲。", "乙。", "丙。"]),
    ("评分对象：甲\n\n注意：这只是说明", ["甲"]),
    ("评测对象：乙", ["乙"]),
    ("没有标签：丙", ["丙"]),
    ("丁", ["丁"]),
    (None, []),
])
def test_the_extractor_reply_is_read_as_officially(reply, segments):
    assert extracted_segments(reply, "全文。") == segments
    assert extracted_segments("评分对象：all", None) == []


# ------------------------------------------------------------------------------------ metrics

VERDICTS = {1: [True, True, True, False], 2: [True, True, True, True], 3: [False, True, True],
            4: [True, True, True], 5: [1, 1, 1], 6: None}


def test_a_question_fails_when_a_question_it_depends_on_failed(tmp_path):
    rows = load_rows(write(tmp_path, ROWS))
    assert with_dependencies(rows[0], [False, True, True, True]) == [False, False, False, True]
    assert with_dependencies(rows[0], [True, False, True, True]) == [True, False, True, True]
    # one level, as officially: q2 depends on q1 only, which was judged met
    assert with_dependencies(rows[2], [False, True, True]) == [False, False, True]
    assert with_dependencies(rows[3], [True, False, True]) == [True, False, False]


def test_drfr_breakdowns_and_the_coherent_test(tmp_path):
    rows = load_rows(write(tmp_path, ROWS))
    m = aggregate(rows, VERDICTS)
    assert m["instructions"] == 6 and m["scored"] == 5 and m["unscored"] == [6]
    assert m["drfr"] == {"n": 17, "met": 14, "rate": 0.8235}
    assert m["by_dimension"]["Length"] == {"n": 4, "met": 3, "rate": 0.75}
    assert m["by_type"] == {"Lexical": {"n": 1, "met": 1, "rate": 1.0},
                            "Others": {"n": 2, "met": 2, "rate": 1.0},
                            "Semantic": {"n": 2, "met": 0, "rate": 0.0},
                            "Structure": {"n": 6, "met": 4, "rate": 0.6667},  # q3's two dimensions count twice
                            "Utility": {"n": 8, "met": 8, "rate": 1.0}}
    assert m["by_composition"] == {"Chain": {"n": 1, "met": 0, "rate": 0.0},
                                   "Selection": {"n": 6, "met": 6, "rate": 1.0}}
    assert m["by_category"]["Selection_1"] == {"n": 8, "met": 7, "rate": 0.875}
    assert m["by_category_base"] == {"Chain": {"n": 3, "met": 1, "rate": 0.3333},
                                     "Selection": {"n": 14, "met": 13, "rate": 0.9286}}
    assert m["by_task_type"]["Creative Writing"] == {"n": 3, "met": 1, "rate": 0.3333}
    assert set(m["by_composition_set"]) == {"And_Selection", "Chain", "Selection_Selection"}
    single, multiple = m["coherent_test"]["single"], m["coherent_test"]["multiple"]
    # g1: one of its two instructions passes, so the group fails; g3 is not scored
    assert single == {"groups": 1, "unscored_groups": 1, "instructions": 2, "origin": 0.5, "coherent": 0.0,
                      "relative_drop": 1.0}
    assert multiple == {"groups": 1, "unscored_groups": 0, "instructions": 2, "origin": 1.0, "coherent": 1.0,
                        "relative_drop": 0.0}


def test_unscored_rows_are_kept_apart_never_counted_as_failed(tmp_path):
    rows = load_rows(write(tmp_path, ROWS))
    partial = {**VERDICTS, 2: [True, None, True, True]}
    m = aggregate(rows, partial)
    assert m["unscored"] == [2, 6] and m["drfr"] == {"n": 13, "met": 10, "rate": 0.7692}
    assert m["coherent_test"]["single"]["groups"] == 0 and m["coherent_test"]["single"]["unscored_groups"] == 2
    assert m["coherent_test"]["single"]["origin"] is None
    assert aggregate(rows, {})["drfr"] == {"n": 0, "met": 0, "rate": None}


def test_verdicts_that_do_not_fit_the_row_are_an_error(tmp_path):
    rows = load_rows(write(tmp_path, ROWS))
    with pytest.raises(InputError, match="main_id 1: 3 for 4 scoring questions"):
        aggregate(rows, {1: [True, True, True]})
    with pytest.raises(InputError, match="main_id 3: question 1 must be true or false, not 'yes'"):
        aggregate(rows, {3: [True, "yes", True]})


def test_dimensions_map_to_the_four_constraint_types():
    assert [constraint_type(d) for d in ("Keywords", "Template", "Topic", "Target Language", "Rhyme")] == [
        "Lexical", "Structure", "Semantic", "Utility", "Others"]
