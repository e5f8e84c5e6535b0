"""Rule checkers (flows/checks/): spec validation, counting, formats, lists, headings, phrase
matching, language detection, template openings and endings, in Chinese and English."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from flows.checks import (
    CHECK_SCHEMA,
    DIMENSION_KINDS,
    KIND_SCHEMAS,
    LANGUAGES,
    Verdict,
    check,
    count_units,
    detect_language,
    headings,
    list_items,
    split_paragraphs,
    split_sentences,
    validate_spec,
)
from flows.language import supported_languages
from flows.taxonomy import load_taxonomy

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------- schema

VALID_SPECS = [
    {"kind": "count", "unit": "chars", "max": 300},
    {"kind": "count", "unit": "words", "min": 100, "max": 150},
    {"kind": "count", "unit": "list_items", "min": 5, "max": 5},
    {"kind": "format", "format": "json"},
    {"kind": "list", "style": "numbered", "min_items": 3},
    {"kind": "headings", "levels": [1, 2]},
    {"kind": "headings"},
    {"kind": "include", "phrases": ["海洋", "音乐"], "mode": "any"},
    {"kind": "exclude", "phrases": ["very"]},
    {"kind": "language", "language": "fr"},
    {"kind": "starts_with", "phrase": "尊敬的客户"},
    {"kind": "ends_with", "phrase": "Best regards"},
]


def test_check_schema_is_valid_and_accepts_every_kind():
    jsonschema.Draft202012Validator.check_schema(CHECK_SCHEMA)
    assert {spec["kind"] for spec in VALID_SPECS} == set(KIND_SCHEMAS)
    for spec in VALID_SPECS:
        jsonschema.validate(spec, CHECK_SCHEMA)
        assert validate_spec(spec) is None, spec


def test_check_schema_rejects_extra_fields_and_wrong_kinds():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "format", "format": "json", "strict": True}, CHECK_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "count", "unit": "chars"}, CHECK_SCHEMA)  # neither min nor max
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "spelling"}, CHECK_SCHEMA)


def test_every_kind_is_self_describing_and_closed():
    for kind, schema in KIND_SCHEMAS.items():
        assert schema["additionalProperties"] is False
        assert schema["properties"]["kind"]["const"] == kind
        assert schema["description"]
        for name, prop in schema["properties"].items():
            assert name == "kind" or prop.get("description"), (kind, name)


def test_dimension_kinds_cover_the_rule_checkable_dimensions_of_the_taxonomy():
    rule_checkable = {d.id for d in load_taxonomy().dimensions if d.rule_checkable}
    assert set(DIMENSION_KINDS) == rule_checkable
    assert {k for kinds in DIMENSION_KINDS.values() for k in kinds} == set(KIND_SCHEMAS)
    assert DIMENSION_KINDS["numbering_and_list"] == ("list", "count")
    assert DIMENSION_KINDS["template"] == ("starts_with", "ends_with")


@pytest.mark.parametrize("spec, dimension, fragment", [
    ({"kind": "count", "unit": "chars", "min": 300, "max": 200}, None, "min 300 is greater than max 200"),
    ({"kind": "list", "style": "any", "min_items": 5, "max_items": 3}, None, "min_items 5 is greater than max_items 3"),
    ({"kind": "headings", "min_count": 4, "max_count": 2}, None, "min_count 4 is greater than max_count 2"),
    ({"kind": "spelling", "phrases": ["x"]}, None, "unknown kind 'spelling'"),
    ({"unit": "chars", "max": 3}, None, "unknown kind None"),
    ({"kind": "include", "phrases": []}, None, "phrases"),
    ({"kind": "exclude", "phrases": [""]}, None, "phrases/0"),
    ({"kind": "exclude", "phrases": ["  "]}, None, "empty after normalising"),
    ({"kind": "starts_with", "phrase": "**"}, None, "empty after stripping"),
    ({"kind": "count", "unit": "chars"}, None, "count needs min and/or max"),
    ({"kind": "count", "unit": "pages", "max": 2}, None, "unit"),
    ({"kind": "count", "unit": "chars", "min": -1}, None, "minimum"),
    ({"kind": "format", "format": "json", "strict": True}, None, "'strict' was unexpected"),
    ({"kind": "include", "phrases": ["海洋"]}, "numerical", "kind 'include' cannot check dimension 'numerical'"),
    ({"kind": "count", "unit": "words", "max": 9}, "template", "allowed: starts_with, ends_with"),
    ({"kind": "include", "phrases": ["海洋"]}, "theme", "dimension 'theme' has no rule checks"),
])
def test_validate_spec_rejects(spec, dimension, fragment):
    reason = validate_spec(spec, dimension)
    assert reason is not None and fragment in reason, reason
    assert "\n" not in reason


def test_validate_spec_rejects_non_objects():
    assert validate_spec(["count"]) == "a spec must be a JSON object, not list"


@pytest.mark.parametrize("constraint, dimension, spec", [
    # real constraints of data/trace-eval/202409_trace_evaluation.jsonl and a spec for each
    ("2. 每日工作计划列表长度不超过10项；", "numerical", {"kind": "count", "unit": "list_items", "max": 10}),
    ("使用编号列表来组织信息；", "numbering_and_list", {"kind": "list", "style": "numbered"}),
    ("整个输出需严格遵循JSON格式规范；", "output_format", {"kind": "format", "format": "json"}),
    ("使用标题和子标题构建层次清晰的结构", "hierarchical_structure", {"kind": "headings", "levels": [1, 2]}),
    ("3. 口号：“品尝时尚、享受美味”；", "inclusion", {"kind": "include", "phrases": ["品尝时尚、享受美味"]}),
    ("1. 翻译的目标语言为法语；", "multilingual", {"kind": "language", "language": "fr"}),
    ("1. 文章标题为“房主需要了解Bellgrove v Eldridge [1954] HCA 36的内容”；", "template",
     {"kind": "starts_with", "phrase": "房主需要了解Bellgrove v Eldridge [1954] HCA 36的内容"}),
])
def test_specs_for_real_constraints_are_valid_for_their_dimension(constraint, dimension, spec):
    assert validate_spec(spec, dimension) is None, constraint


@pytest.mark.parametrize("response", ["", "   ", "\n\t\r\n \u3000"])
@pytest.mark.parametrize("spec", VALID_SPECS + [{"kind": "count", "unit": "chars", "max": 300},
                                               {"kind": "headings", "max_count": 3}], ids=repr)
def test_an_empty_response_fails_every_check(spec, response):
    assert check(spec, response) == Verdict(False, "the response is empty")


def test_check_rejects_unknown_kind_and_verdict_is_frozen():
    with pytest.raises(ValueError, match="unknown check kind 'spelling'"):
        check({"kind": "spelling"}, "text")
    verdict = check({"kind": "count", "unit": "chars", "max": 1}, "ab")
    assert verdict == Verdict(False, "2 characters, needs at most 1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.passed = True


# ------------------------------------------------------------------------------- count


def test_chinese_chars_count_each_character_without_punctuation_or_spaces():
    assert count_units("你好，世界！", "chars") == 4
    assert count_units("你好， 世界！ Hello, world 123", "chars") == 4 + 5 + 5 + 3
    assert count_units("## 标题\n\n- **要点**", "chars") == 4  # Markdown marks are not characters
    assert check({"kind": "count", "unit": "chars", "max": 300}, "字" * 312) == \
        Verdict(False, "312 characters, needs at most 300")
    assert check({"kind": "count", "unit": "chars", "min": 10, "max": 20}, "春眠不觉晓，处处闻啼鸟。") == \
        Verdict(True, "10 characters, needs 10 to 20")


def test_chinese_words_are_characters_not_one_word():
    assert count_units("我爱北京天安门", "words") == 7
    assert count_units("I love Beijing", "words") == 3
    assert count_units("使用Python编程，don't well-known 3.14 1,000", "words") == 4 + 5
    assert check({"kind": "count", "unit": "words", "min": 5}, "我爱北京天安门") == \
        Verdict(True, "7 words, needs at least 5")
    assert check({"kind": "count", "unit": "words", "max": 2}, "Keep it short please.") == \
        Verdict(False, "4 words, needs at most 2")


def test_sentences_split_on_chinese_and_latin_terminators():
    assert split_sentences("你好。今天天气很好！你呢？") == ["你好。", "今天天气很好！", "你呢？"]
    assert split_sentences("Hi. How are you? Great!") == ["Hi.", "How are you?", "Great!"]
    assert split_sentences("他说：“好。”然后走了……真的吗?!") == ["他说：“好。”", "然后走了……", "真的吗?!"]
    assert split_sentences("Wait... what") == ["Wait...", "what"]
    # a semicolon does not end a sentence
    assert count_units("首先准备材料；然后开始制作。", "sentences") == 1
    # decimals, abbreviations and domains do not end sentences
    assert split_sentences("Pi is 3.14. E.g. this works. Mr. Smith visited example.com today.") == \
        ["Pi is 3.14.", "E.g. this works.", "Mr. Smith visited example.com today."]
    # list markers and heading marks are not part of a sentence; headings and items are units
    assert split_sentences("# 标题\n1. 第一点。\n2. 第二点") == ["标题", "第一点。", "第二点"]
    assert check({"kind": "count", "unit": "sentences", "min": 3, "max": 3}, "一。二！三？") == \
        Verdict(True, "3 sentences, needs exactly 3")
    assert check({"kind": "count", "unit": "sentences", "max": 2}, "One. Two! Three?") == \
        Verdict(False, "3 sentences, needs at most 2")


@pytest.mark.parametrize("text, sentences", [
    ("**One.** Two.", ["**One.**", "Two."]),
    ("*One.* _Two._ __Three.__ Four.", ["*One.*", "_Two._", "__Three.__", "Four."]),
    ("**Really?** Yes.", ["**Really?**", "Yes."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("(See the figure.) Next. [Done.] End.", ["(See the figure.)", "Next.", "[Done.]", "End."]),
    ("他说“好。”然后走了。【完。】", ["他说“好。”", "然后走了。", "【完。】"]),
])
def test_a_full_stop_before_closing_emphasis_quotes_or_brackets_ends_a_sentence(text, sentences):
    assert split_sentences(text) == sentences


def test_wrapped_lines_continue_a_sentence():
    poem = "Roses are red\nViolets are blue,\nSugar is sweet\nAnd so are you.\n"
    assert split_sentences(poem) == ["Roses are red\nViolets are blue,\nSugar is sweet\nAnd so are you."]
    assert count_units(poem * 10, "sentences") == 10  # 40 lines, 10 sentences
    assert count_units("床前明月光，\n疑是地上霜。\n举头望明月，\n低头思故乡。", "sentences") == 2
    assert count_units("床前明月光\n疑是地上霜\n\n举头望明月\n低头思故乡", "sentences") == 2  # stanzas
    assert split_sentences("> quoted line one\n> continues here.") == ["quoted line one\ncontinues here."]


def test_units_of_their_own_end_at_the_line_break():
    text = ("## Ingredients\n- flour\n- sugar\n\n**Steps**\n1. Mix the flour\n   with the sugar.\n2. Bake.\n"
            "Enjoy!\n\nServe warm\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert split_sentences(text) == ["Ingredients", "flour", "sugar", "Steps", "Mix the flour\nwith the sugar.",
                                      "Bake.", "Enjoy!", "Serve warm", "| a | b |", "| 1 | 2 |"]
    assert split_sentences("第一段没有句号\n\n第二段") == ["第一段没有句号", "第二段"]
    assert split_sentences("Before\n---\nAfter") == ["Before", "After"]


def test_header_fields_placeholders_and_code_hold_no_sentence():
    letter = ("Subject: Meeting on Friday\n\nDear John,\n\nI hope you are well. Let's meet on Friday.\n\n"
              "Best regards,\n[Your Name]\n[Your Title], [Company]")
    # the salutation runs on into the paragraph it opens; the sign-off is one sentence
    assert split_sentences(letter) == ["Dear John,\nI hope you are well.", "Let's meet on Friday.", "Best regards,"]
    assert count_units("To: Ann\nFrom: Bob\nDate: May 1\nHi Ann,\nThanks for the note.\nBest regards,\nBob Smith",
                       "sentences") == 2
    chinese = "主题：会议通知\n\n尊敬的客户：\n\n您好！感谢您的来信。\n\n此致\n敬礼\n【姓名】"
    assert split_sentences(chinese) == ["尊敬的客户：\n您好！", "感谢您的来信。", "此致\n敬礼"]
    code = "Here is code:\n```python\nprint(1)\nx = 2\n```\nIt prints 1."
    assert split_sentences(code) == ["Here is code:", "It prints 1."]


def test_paragraphs_ignore_leading_blank_lines():
    text = "\n\n   \n第一段第一行\n第一段第二行\n\n \t\n第二段。\n\n\n"
    assert split_paragraphs(text) == ["第一段第一行\n第一段第二行", "第二段。"]
    assert split_paragraphs(text)[0] == split_paragraphs(text.lstrip())[0]
    assert count_units(text, "paragraphs") == 2
    assert check({"kind": "count", "unit": "paragraphs", "min": 2, "max": 2}, text) == \
        Verdict(True, "2 paragraphs, needs exactly 2")
    assert check({"kind": "count", "unit": "paragraphs", "min": 3, "max": 3}, "\r\n\r\nOne.\r\n\r\nTwo.") == \
        Verdict(False, "2 paragraphs, needs exactly 3")


def test_list_item_count_is_top_level_items():
    text = "建议如下：\n1. 早睡\n   - 十点前\n   - 不看手机\n2. 运动\n3. 饮食"
    assert count_units(text, "list_items") == 3
    assert check({"kind": "count", "unit": "list_items", "max": 10}, text) == Verdict(True, "3 list items, needs at most 10")
    assert check({"kind": "count", "unit": "list_items", "min": 5}, text) == Verdict(False, "3 list items, needs at least 5")


def test_count_units_rejects_unknown_unit():
    with pytest.raises(ValueError, match="unknown unit 'pages'"):
        count_units("text", "pages")


# ------------------------------------------------------------------------------- format


def fmt(name: str, response: str) -> Verdict:
    return check({"kind": "format", "format": name}, response)


def test_json_plain_and_fenced():
    assert fmt("json", '{"平均值": 5, "标准差": 2.24}') == Verdict(True, "valid JSON object with 2 keys")
    assert fmt("json", '```json\n[1, 2, 3]\n```') == Verdict(True, "valid JSON array with 3 items")
    assert fmt("json", '\n```\n{"a": 1}\n```\n').passed


def test_json_failures():
    assert fmt("json", '{"a": 1,}') == Verdict(False, "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 9")
    assert not fmt("json", '结果如下：\n```json\n{"a": 1}\n```').passed  # prose around the block
    assert fmt("json", '"just a string"') == Verdict(False, "JSON is a bare str, not an object or array")


def test_markdown_table():
    table = "| 餐次 | 菜单 | 份量 |\n|:---|:---:|---:|\n| 早餐 | 燕麦 | 50g |\n| 午餐 | 米饭 | 100g |"
    assert fmt("markdown_table", "饮食计划：\n\n" + table + "\n\n祝健康。") == \
        Verdict(True, "Markdown table: 3 columns, 2 body rows")
    assert fmt("markdown_table", "Name | Age\n--- | ---\nAnn | 30").passed


def test_markdown_table_without_separator_row_fails():
    assert fmt("markdown_table", "| 餐次 | 菜单 |\n| 早餐 | 燕麦 |\n| 午餐 | 米饭 |") == \
        Verdict(False, "rows with | but no separator row (|---|) under a header row")
    assert fmt("markdown_table", "| a | b |\n|---|---|\n| 1 | 2 | 3 |") == \
        Verdict(False, "a table row has 3 cells, the header has 2")
    assert fmt("markdown_table", "| a | b |\n|---|---|") == Verdict(False, "a table header and separator but no body rows")
    assert fmt("markdown_table", "no table here") == Verdict(False, "no Markdown table")
    assert not fmt("markdown_table", "```\n| a | b |\n|---|---|\n| 1 | 2 |\n```").passed  # code, not a table


def test_html():
    page = "<!DOCTYPE html>\n<html><body><h1>标题</h1><p>第一行<br>第二行</p><img src='a.png'/></body></html>"
    assert fmt("html", page) == Verdict(True, "well-formed HTML, 6 elements")
    assert fmt("html", "```html\n<ul><li>a</li></ul>\n```").passed


def test_html_unclosed_or_misnested_tags_fail():
    assert fmt("html", "<div><p>文本</p>") == Verdict(False, "HTML not well-formed: unclosed <div>")
    assert fmt("html", "<div><span>x</div></span>") == Verdict(False, "HTML not well-formed: <span> is not closed before </div>")
    assert fmt("html", "<p>x</p></div>") == Verdict(False, "HTML not well-formed: </div> has no opening tag")
    assert fmt("html", "纯文本，没有标签") == Verdict(False, "no HTML elements")


def test_latex():
    doc = ("\\documentclass{article}\n\\begin{document}\n% a comment with a stray {\n"
           "\\begin{itemize}\n\\item 集合 \\{1, 2\\}\n\\end{itemize}\n$\\frac{a}{b}$\n\\end{document}")
    assert fmt("latex", doc) == Verdict(True, "LaTeX: braces balanced, 2 environments, 7 commands")


def test_latex_failures():
    assert fmt("latex", "\\begin{itemize}\n\\item a\n\\end{enumerate}") == \
        Verdict(False, "LaTeX not well-formed: \\end{enumerate} closes \\begin{itemize}")
    assert fmt("latex", "\\begin{equation} x \\end{equation} \\end{align}") == \
        Verdict(False, "LaTeX not well-formed: \\end{align} closes no \\begin")
    assert fmt("latex", "\\begin{table}\\centering") == Verdict(False, "LaTeX not well-formed: \\begin{table} has no \\end")
    assert fmt("latex", "\\frac{a}{b") == Verdict(False, "LaTeX not well-formed: 1 unclosed {")
    assert fmt("latex", "a} + {b") == Verdict(False, "LaTeX not well-formed: } without {")
    assert fmt("latex", "x^2 + {y}") == Verdict(False, "no LaTeX commands")


# ------------------------------------------------------------------------------- lists and headings


@pytest.mark.parametrize("line", ["1. 苹果", "1.苹果", "1) apple", "1、苹果", "(1) apple", "（1）苹果", "① 苹果",
                                  "一、苹果", "（一）苹果", "第一，苹果", "第一步：洗净", "１．苹果", "**1. 苹果**"])
def test_numbered_markers(line):
    assert list_items(line, "numbered") == ["苹果" if "苹果" in line else ("apple" if "apple" in line else "洗净")]
    assert list_items(line, "bulleted") == []


@pytest.mark.parametrize("line", ["- 苹果", "* 苹果", "• 苹果", "·苹果", "+ 苹果"])
def test_bulleted_markers(line):
    assert list_items(line, "bulleted") == ["苹果"]
    assert list_items(line, "numbered") == []


@pytest.mark.parametrize("line", ["**重点**内容", "-5 度", "3.14是圆周率", "1.5倍", "第一次见面", "---", "* * *", "- ",
                                  "## 1. 引言", "2024年"])
def test_not_list_items(line):
    assert list_items(line) == []


def test_list_check():
    numbered = "步骤：\n1. Preheat the oven.\n2. Mix the flour.\n   - sift it first\n3. Bake."
    assert check({"kind": "list", "style": "numbered", "min_items": 3}, numbered) == \
        Verdict(True, "3 numbered list items, needs at least 3")
    assert check({"kind": "list", "style": "bulleted"}, numbered) == Verdict(True, "1 bulleted list item, needs at least 1")
    assert check({"kind": "list", "style": "numbered", "max_items": 2}, numbered) == \
        Verdict(False, "3 numbered list items, needs 1 to 2")  # min_items defaults to 1
    assert check({"kind": "list", "style": "numbered"}, "- 苹果\n- 香蕉") == \
        Verdict(False, "0 numbered list items, needs at least 1")
    assert check({"kind": "list", "style": "any", "min_items": 2}, "- 苹果\n- 香蕉") == \
        Verdict(True, "2 list items, needs at least 2")
    assert list_items("```\n1. code\n```\n1. real") == ["real"]
    assert list_items("1. 背景\n1.1 市场\n1.2 竞争\n2. 方案") == ["背景", "方案"]


def test_headings():
    text = "# 职业规划概述\n\n## 个人目标设定\n内容\n\n## 技能提升 ##\n```\n# 代码注释\n```\n#没有空格"
    assert headings(text) == [(1, "职业规划概述"), (2, "个人目标设定"), (2, "技能提升")]
    assert check({"kind": "headings", "levels": [1, 2]}, text) == Verdict(True, "3 headings (levels 1, 2), needs at least 1")
    assert check({"kind": "headings", "levels": [1, 3]}, text) == Verdict(False, "3 headings (levels 1, 2), needs level 3")
    assert check({"kind": "headings", "max_count": 2}, text) == Verdict(False, "3 headings (levels 1, 2), needs 1 to 2")
    assert check({"kind": "headings"}, "A plain answer.\n#hashtag") == Verdict(False, "0 headings, needs at least 1")


# ------------------------------------------------------------------------------- include / exclude


def test_include_normalises_width_and_quotes():
    assert check({"kind": "include", "phrases": ["（品尝时尚）"]}, "口号：(品尝时尚)").passed
    assert check({"kind": "include", "phrases": ["(品尝时尚)"]}, "口号：（品尝时尚）").passed
    assert check({"kind": "include", "phrases": ["“品尝时尚、享受美味”"]}, "口号是「品尝时尚、享受美味」。").passed
    assert check({"kind": "include", "phrases": ['"Taste fashion"']}, "Slogan: “taste FASHION”").passed
    assert check({"kind": "include", "phrases": ["甲，乙"]}, "甲,乙").passed
    assert check({"kind": "include", "phrases": ["品尝时尚、享受美味"]}, "口号：**品尝时尚**、享受美味") == \
        Verdict(True, 'contains "品尝时尚、享受美味"')


def test_include_all_and_any():
    slogan = "Feel the ocean, hear the music."
    assert check({"kind": "include", "phrases": ["Ocean", "MUSIC"]}, slogan) == Verdict(True, "contains all 2 phrases")
    assert check({"kind": "include", "phrases": ["ocean", "sky", "sun"]}, slogan) == Verdict(False, 'missing "sky", "sun"')
    assert check({"kind": "include", "phrases": ["sky", "music"], "mode": "any"}, slogan) == Verdict(True, 'contains "music"')
    assert check({"kind": "include", "phrases": ["sky", "sun"], "mode": "any"}, slogan) == \
        Verdict(False, 'contains none of "sky", "sun"')
    assert not check({"kind": "include", "phrases": ["art"]}, "Let us start.").passed  # whole words in Latin script
    assert check({"kind": "include", "phrases": ["海洋"]}, "我爱海洋音乐").passed  # Chinese: plain substring


def test_exclude():
    assert check({"kind": "exclude", "phrases": ["very"]}, "Every day is a gift.") == \
        Verdict(True, "none of 1 excluded phrase found")
    assert check({"kind": "exclude", "phrases": ["very", "really"]}, "It is Very good.") == \
        Verdict(False, 'contains excluded "very"')
    assert check({"kind": "exclude", "phrases": ["（广告）"]}, "新品上市(广告)") == Verdict(False, 'contains excluded "（广告）"')
    assert check({"kind": "exclude", "phrases": ["「剧透」"]}, "这里没有“剧透”内容") == Verdict(False, 'contains excluded "「剧透」"')
    assert check({"kind": "exclude", "phrases": ["越位", "点球"]}, "比赛非常精彩。").passed


# ------------------------------------------------------------------------------- language

IFEVAL_RESPONSE_LANGUAGES = "ar bg bn de fa fi gu hi it kn ko mr ne pa pt ru sw ta te th ur vi".split()

# A sentence or two of real prose in each language: short texts are unreliable for any identifier.
LANGUAGE_SAMPLES = {
    "ar": "القاهرة هي عاصمة مصر وأكبر مدنها، ويعيش فيها ملايين الناس الذين يعملون في مجالات مختلفة.",
    "bg": "София е столицата на България и най-големият град в страната, с богата история и култура.",
    "bn": "ঢাকা বাংলাদেশের রাজধানী এবং দেশের সবচেয়ে বড় শহর, যেখানে লক্ষ লক্ষ মানুষ বাস করে।",
    "de": "Berlin ist die Hauptstadt Deutschlands und eine Stadt mit einer langen und bewegten Geschichte.",
    "fa": "تهران پایتخت ایران و بزرگ‌ترین شهر این کشور است و میلیون‌ها نفر در آن زندگی می‌کنند.",
    "fi": "Helsinki on Suomen pääkaupunki ja maan suurin kaupunki, jossa asuu yli puoli miljoonaa ihmistä.",
    "gu": "અમદાવાદ ગુજરાતનું સૌથી મોટું શહેર છે અને તે તેના ઇતિહાસ અને સંસ્કૃતિ માટે જાણીતું છે.",
    "hi": "नई दिल्ली भारत की राजधानी है और यह शहर अपने इतिहास और संस्कृति के लिए प्रसिद्ध है।",
    "it": "Roma è la capitale d'Italia ed è famosa per i suoi monumenti antichi e la sua cucina.",
    "kn": "ಬೆಂಗಳೂರು ಕರ್ನಾಟಕದ ರಾಜಧಾನಿ ಮತ್ತು ಭಾರತದ ಪ್ರಮುಖ ತಂತ್ರಜ್ಞಾನ ಕೇಂದ್ರವಾಗಿದೆ.",
    "ko": "서울은 대한민국의 수도이며 많은 사람들이 살고 있는 큰 도시입니다.",
    "mr": "मुंबई ही महाराष्ट्राची राजधानी आहे आणि ते भारतातील सर्वात मोठे शहर आहे.",
    "ne": "काठमाडौं नेपालको राजधानी हो र यो देशको सबैभन्दा ठूलो सहर पनि हो।",
    "pa": "ਅੰਮ੍ਰਿਤਸਰ ਪੰਜਾਬ ਦਾ ਇੱਕ ਪ੍ਰਸਿੱਧ ਸ਼ਹਿਰ ਹੈ ਅਤੇ ਇੱਥੇ ਹਰਿਮੰਦਰ ਸਾਹਿਬ ਸਥਿਤ ਹੈ।",
    "pt": "Lisboa é a capital de Portugal e é conhecida pelos seus bairros antigos e pelo fado.",
    "ru": "Москва является столицей России и крупнейшим городом страны с богатой историей.",
    "sw": "Nairobi ni mji mkuu wa Kenya na ni mojawapo ya miji mikubwa zaidi katika Afrika Mashariki.",
    "ta": "சென்னை தமிழ்நாட்டின் தலைநகரம் மற்றும் இந்தியாவின் முக்கியமான நகரங்களில் ஒன்றாகும்.",
    "te": "హైదరాబాద్ తెలంగాణ రాష్ట్ర రాజధాని మరియు ఇది బిర్యానీకి ప్రసిద్ధి చెందింది.",
    "th": "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นเมืองที่ใหญ่ที่สุดในประเทศ",
    "ur": "اسلام آباد پاکستان کا دارالحکومت ہے اور یہ ایک خوبصورت اور پرسکون شہر ہے۔",
    "vi": "Hà Nội là thủ đô của Việt Nam và là một thành phố có lịch sử hơn một nghìn năm.",
    "zh": "北京是中国的首都，也是一座历史悠久、文化灿烂的城市，每年吸引大量游客。",
    "en": "London is the capital of the United Kingdom and one of the largest cities in Europe.",
    "ja": "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
    "fr": "Paris est la capitale de la France et elle est célèbre pour ses musées et sa cuisine.",
    "es": "Madrid es la capital de España y es conocida por sus museos, sus parques y su vida nocturna.",
}


@pytest.mark.parametrize("lang", sorted(LANGUAGE_SAMPLES))
def test_detect_language(lang):
    assert detect_language(LANGUAGE_SAMPLES[lang]) == lang
    assert check({"kind": "language", "language": lang}, LANGUAGE_SAMPLES[lang]).passed


def test_detect_language_of_mixed_answers():
    assert detect_language("这是一个使用Python和pandas库读取CSV文件的例子，代码如下。") == "zh"
    assert detect_language("在机器学习中，我们通常使用Transformer模型和Attention机制，例如BERT、GPT等预训练语言模型。") == "zh"
    assert detect_language("The dish is called 宫保鸡丁 and it is a spicy classic from Sichuan.") == "en"
    assert detect_language("12345 !!! ---") == "unknown"  # no letters at all


def test_detect_language_ignores_code_and_urls():
    answer = "下面是读取文件的代码：\n```python\nimport pandas as pd\ndf = pd.read_csv('data.csv')\nprint(df.head())\n```\n参见 https://pandas.pydata.org/docs/reference/api/pandas.read_csv.html"
    assert detect_language(answer) == "zh"
    assert detect_language("```python\nprint('hello world')\n```\nhttps://example.com/a/b `x = 1`") == "unknown"


def test_detect_language_is_deterministic_across_calls_and_hash_seeds():
    texts = [*LANGUAGE_SAMPLES.values(), "Le the der el", "die the", "中文 and English mixed 一起", "你好"]
    here = [detect_language(t) for t in texts]
    assert here == [detect_language(t) for t in texts]
    script = "import json, sys; from flows.checks import detect_language; " \
             "print(json.dumps([detect_language(t) for t in json.loads(sys.stdin.read())]))"
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True,
                             text=True, cwd=REPO, env=env, check=True, timeout=60)
        assert json.loads(out.stdout) == here, seed


def test_languages_a_spec_may_ask_for():
    assert set(LANGUAGE_SAMPLES) <= set(LANGUAGES)
    assert set(IFEVAL_RESPONSE_LANGUAGES) <= set(LANGUAGES)
    assert LANGUAGES[:9] == ("zh", "en", "ja", "ko", "ru", "ar", "fr", "de", "es")  # the set before py3langid
    assert set(LANGUAGES) <= set(supported_languages())  # each can be detected
    assert all(len(code) == 2 for code in LANGUAGES) and len(set(LANGUAGES)) == len(LANGUAGES)
    prop = KIND_SCHEMAS["language"]["properties"]["language"]
    assert prop["enum"] == list(LANGUAGES)
    assert "hi Hindi" in prop["description"] and "sw Swahili" in prop["description"]
    assert validate_spec({"kind": "language", "language": "hi"}, "multilingual") is None
    assert "language" in validate_spec({"kind": "language", "language": "klingon"})


def test_language_check():
    assert check({"kind": "language", "language": "en"}, LANGUAGE_SAMPLES["en"]) == \
        Verdict(True, "detected en (English), needs en (English)")
    assert check({"kind": "language", "language": "fr"}, "这是中文。") == \
        Verdict(False, "detected zh (Chinese), needs fr (French)")
    assert check({"kind": "language", "language": "hi"}, LANGUAGE_SAMPLES["mr"]) == \
        Verdict(False, "detected mr (Marathi), needs hi (Hindi)")
    # short Mandarin is often taken for Cantonese: a variety counts as its language
    assert check({"kind": "language", "language": "zh"}, "你好") == \
        Verdict(True, "detected yue (a variety of zh, Chinese), needs zh (Chinese)")


# ------------------------------------------------------------------------------- template


def test_starts_with():
    title = "房主需要了解Bellgrove v Eldridge [1954] HCA 36的内容"
    response = f"# **{title}**\n\n本文介绍……"
    assert check({"kind": "starts_with", "phrase": f"“{title}”"}, response) == Verdict(True, f'starts with "“{title}”"')
    assert check({"kind": "starts_with", "phrase": "Dear customer,"}, "  > DEAR Customer, thank you").passed
    assert check({"kind": "starts_with", "phrase": "尊敬的客户"}, "您好，尊敬的客户") == \
        Verdict(False, 'starts with "您好，尊敬的客户", needs "尊敬的客户"')
    assert not check({"kind": "starts_with", "phrase": "Dear"}, "Dearest friend").passed


def test_ends_with():
    assert check({"kind": "ends_with", "phrase": "祝您生活愉快！"}, "感谢来信。\n\n祝您生活愉快。") == \
        Verdict(True, 'ends with "祝您生活愉快！"')
    assert check({"kind": "ends_with", "phrase": "Best regards"}, "Thanks.\n\n**Best regards.**\n").passed
    assert check({"kind": "ends_with", "phrase": "再见"}, "他说“再见”。").passed
    assert check({"kind": "ends_with", "phrase": "Best regards"}, "Thanks, and best regards, Ann") == \
        Verdict(False, 'ends with "…best regards, Ann", needs "Best regards"')
    assert not check({"kind": "ends_with", "phrase": "regards"}, "Kind disregards").passed


def test_module_docstring_examples_hold():
    import doctest

    import flows.checks
    import flows.checks.sentences

    assert doctest.testmod(flows.checks).failed == 0
    assert doctest.testmod(flows.checks.sentences).failed == 0
