"""A seed's material must survive expansion and structuring (flows/material.py): the two rows of
the 1.5B demo run whose material was replaced, and rewrites that keep it in another layout."""
from flows.material import kept_share, material_lost, seed_material

SUMMARY_SEED = ("总结下面这段话的主要内容：城市里的共享单车在过去几年迅速普及，给市民的短途出行带来了方便，"
                "但也出现了乱停乱放、车辆损坏和押金难退等问题。")
EXTRACT_SEED = "请提取下面这段文字中的人名、地点和时间：2023年5月，李明和同事赵敏在杭州参加了一场关于人工智能的行业会议。"
TABLE_SEED = "将下面的数据整理成表格：张伟，28岁，工程师，北京；李娜，34岁，教师，成都。"
REVIEW_SEED = ('Classify the sentiment of this product review as positive, negative or neutral: "The headphones '
               'arrived quickly and sound great, but the ear cushions started peeling after two weeks."')


def test_material_follows_a_colon_the_instruction_points_at_and_is_long_enough():
    assert seed_material(TABLE_SEED) == "张伟，28岁，工程师，北京；李娜，34岁，教师，成都。"
    assert seed_material(REVIEW_SEED).startswith("The headphones")  # the quotation
    assert seed_material('Rewrite this sentence: "We may be able to improve our model." Use no commas.') == \
        "We may be able to improve our model."  # what follows the quotation is instruction
    assert seed_material("Expand the following and make it funny: Jeanne has rolled the dice.\n\nItalicize "
                         "at least 10 text parts.") == "Jeanne has rolled the dice."  # so is a paragraph after it
    assert seed_material("Summarise the given text: Remote work has reshaped how teams communicate.")
    assert seed_material("写一首关于秋天落叶的短诗。") is None  # no colon
    assert seed_material("Explain this: a") is None  # too short
    # a colon with nothing pointed at, or requirements rather than material
    assert seed_material("Write a poem with the title: Autumn Leaves over the Quiet River") is None
    assert seed_material("写一篇议论文。要求：语言风格客观中立，不少于800字。") is None
    assert seed_material("请按以下要求写一封信：语气正式，三段，每段不超过五十字。") is None
    assert seed_material("Write a cover letter. Follow these rules: formal tone, three paragraphs.") is None
    assert seed_material("Describe a thistle in bloom: purple, spiky and loved by bees.") is None  # not "this"


def test_rewrites_that_replaced_the_material_are_lost():
    # what the 1.5B model wrote for these seeds on the demo run
    summary = ("总结这段话的主要内容，用清晰、简洁的句子表示，并确保其符合以下约束：1. 使用适当的语法结构；"
               "2. 不超过50个字；3. 提供至少一个有效的例子；4. 输出为JSON格式。")
    reason = material_lost(SUMMARY_SEED, summary)
    assert reason and reason.startswith("0% of the seed's material kept (needs 80%)") and "共享单车" in reason
    extract = ('请从给定的文本中提取出人名、地点和时间，然后以JSON格式列出。例如，{"names": ["李明", "赵敏"], '
               '"locations": ["杭州"], "times": ["2023年5月"]}。')
    assert material_lost(EXTRACT_SEED, extract)
    # structuring: description, an invented input, constraints
    assert material_lost(EXTRACT_SEED, "从给定的文本中提取出人名、地点和时间。", "李明在杭州工作，赵敏在纽约生活。", "以JSON格式列出。")


def test_rewrites_that_keep_the_material_in_any_part_or_layout_pass():
    expanded = ("Classify the sentiment of the review below as positive, negative or neutral in exactly three "
                "sentences. Review: “The headphones arrived quickly and sound great — but the ear cushions started "
                "peeling after two weeks.”")
    assert material_lost(REVIEW_SEED, expanded) is None  # other quotes and dashes
    assert material_lost(TABLE_SEED, "将数据整理成Markdown表格。", "张伟 28岁 工程师 北京\n李娜 34岁 教师 成都", "包含姓名、年龄、职业和城市四列。") is None
    assert material_lost("写一首关于秋天落叶的短诗。", "Anything at all") is None  # no material, nothing to lose
    assert kept_share("abcdefghij", "xxabcdefghijxx") == 1.0 and kept_share("abcdefghij", "abcde") == 1 / 6
