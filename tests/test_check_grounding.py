"""A check is kept only as far as its constraint's text supports it (flows/checks/grounding.py):
the misreadings of a small model on the demo seeds, and the wording of bounds and numbers."""
import pytest

from flows.checks.grounding import chinese_numeral, ground, numbers_in


def count(unit, low=None, high=None):
    spec = {"kind": "count", "unit": unit}
    return spec | ({"min": low} if low is not None else {}) | ({"max": high} if high is not None else {})


# what Qwen2.5-Coder-1.5B extracted on the demo seeds, and what is left of it
@pytest.mark.parametrize("spec, text, kept", [
    ({"kind": "format", "format": "markdown_table"}, "Use Markdown format.", None),
    ({"kind": "format", "format": "json"}, "Use JSON as the output format.", {"kind": "format", "format": "json"}),
    ({"kind": "format", "format": "json"}, "Output the information in CSV format.", None),
    (count("sentences", 3, 3), "Return exactly three clauses.", None),
    (count("sentences", 4, 4), "Use exactly four sentences.", count("sentences", 4, 4)),
    (count("chars", 50, 50), "不超过50个字", count("chars", high=50)),
    (count("chars", 200, 200), "应用介绍长度控制在200字左右", None),
    (count("words", 1, 250), "The response must not exceed 250 words.", count("words", high=250)),
    ({"kind": "language", "language": "zh"}, "Use formal language.", None),
    ({"kind": "list", "style": "numbered", "min_items": 1, "max_items": 3},
     "The advice should be structured as a numbered list.", {"kind": "list", "style": "numbered"}),
])
def test_what_a_small_model_read_into_a_constraint_is_cut_to_what_it_says(spec, text, kept):
    assert ground(spec, text) == kept


@pytest.mark.parametrize("spec, text, kept", [
    (count("words", 50, 50), "A poem about the sea in no more than fifty words.", count("words", high=50)),
    (count("words", 300, 300), "不少于三百字", count("words", low=300)),
    (count("words", 300, 500), "Between 300 and 500 words.", count("words", 300, 500)),
    (count("words", 30), "At least thirty words, no fewer than 30.", count("words", low=30)),
    (count("paragraphs", 2, 2), "About 2 paragraphs.", None),
    (count("paragraphs", 2, 2), "请写两段，约束：每段一个主题。", count("paragraphs", 2, 2)),  # 约束 is no "about"
    (count("sentences", 1, 1), "Answer in a single sentence.", count("sentences", 1, 1)),
    # Latin words beside Chinese characters (no \b between them for re)
    ({"kind": "format", "format": "json"}, "以JSON格式列出。", {"kind": "format", "format": "json"}),
    (count("words", high=5), "用不超过five个words回答", count("words", high=5)),
    (count("words", high=80), "about80 words at most", None),
    ({"kind": "include", "phrases": ["river", "Bridge"]}, 'Mention "river" and "bridge".',
     {"kind": "include", "phrases": ["river", "Bridge"]}),
    ({"kind": "include", "phrases": ["river", "lake"]}, 'Mention "river".', None),
    ({"kind": "exclude", "phrases": ["非常"]}, "不要使用“非常”一词。", {"kind": "exclude", "phrases": ["非常"]}),
    ({"kind": "starts_with", "phrase": "Dear team"}, "Begin with 'Dear team,'.",
     {"kind": "starts_with", "phrase": "Dear team"}),
    ({"kind": "ends_with", "phrase": "Best"}, "End politely.", None),
    ({"kind": "language", "language": "en"}, "请用英文回答。", {"kind": "language", "language": "en"}),
    ({"kind": "language", "language": "fr"}, "Answer in French.", {"kind": "language", "language": "fr"}),
    ({"kind": "headings", "min_count": 3}, "Use three Markdown headings.", {"kind": "headings", "min_count": 3}),
    ({"kind": "headings", "min_count": 3}, "Organise it well.", None),
])
def test_bounds_numbers_and_phrases_must_be_in_the_text(spec, text, kept):
    assert ground(spec, text) == kept


def test_numbers_are_read_in_digits_words_and_chinese_numerals():
    assert numbers_in("5,000 words, twelve lines, 两千零五年, 第三百段") == {5000, 12, 2005, 300}
    assert [chinese_numeral(t) for t in ("五十", "十二", "一百零八", "三千五百", "一万")] == [50, 12, 108, 3500, 10000]
    assert chinese_numeral("一二") is None and chinese_numeral("三百五") is None  # a list; short for 350
