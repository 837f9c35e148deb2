"""How Korean a text is: used by the dataset checks and the model-selection metrics."""


def is_hangul(ch: str) -> bool:
    """True for Hangul syllables and jamo."""
    code = ord(ch)
    return 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F


def hangul_ratio(text: str) -> float:
    """Share of Hangul among the letters of a text (emoji, digits, punctuation not counted); 0.0 if none."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(is_hangul(ch) for ch in letters) / len(letters)
