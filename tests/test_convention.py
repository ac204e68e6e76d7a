"""The convention `ablate params --help` prints is made from the counting rules: every rule has
its words, every word belongs to a rule, and the help prints them all."""

from ablate.counting import convention, count_rules


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_every_rule_has_words_and_all_words_have_a_rule():
    rules = [*count_rules.RULES, *count_rules.MODULE_RULES]
    assert len(rules) == len(set(rules))
    assert set(rules) == set(convention.RULES)
    assert all(one_line(words) for words in convention.RULES.values())


def test_each_operator_has_one_rule():
    assert sum(len(ops) for ops in count_rules.RULES.values()) == len(count_rules.FORMULAS)


def test_the_help_prints_every_rule(ablate):
    result = ablate(["params", "--help"])
    assert result.exit_code == 0, result.output
    printed = one_line(result.stdout)
    assert one_line(convention.HEADER) in printed
    for name, words in convention.RULES.items():
        assert one_line(words) in printed, name
