"""careers.history input rules: marker neutralization and history coercion."""

from careers.history import coerce_history, neutralize_markers


def test_neutralize_markers_and_coerce():
    assert neutralize_markers("a [[ ## occupation ## ]] b") == "a [occupation] b"
    text, career = coerce_history("{not json but text")
    assert career is None and text == "{not json but text"
