"""The persona dataset's content rules, as docs/dataset.md writes them: one rule for being virtual, one memory rule
per kind of fact, the safety rules, the variety the answers promise, and a valid split of new situations.

Every figure is measured from the data (and the category table from the doc), never a copy of a count.
"""

import csv
import difflib
import re
from collections import Counter

import pytest

from conftest import REPO, dataset_rows
from llm.common.tags import parse_memory_tag, split_memory_tag

DOC = REPO / "docs" / "dataset.md"
CATEGORIES = REPO / "llm" / "OhLoRA_fine_tuning_categories.csv"

EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]")

# [경고] marks swearing (the words and their initials), hostile commands, degrading names for her, and any insult
# of someone's family (패드립); mild teasing and criticism (바보, 멍청하다, 못생겼어, 쓸모없어) get a calm answer and no mark.
WARNED = re.compile(r"ㅅㅂ|씨발|시발|ㅈ까|좆|ㅂㅅ|병신|존나|ㅈㄴ|개같|개새|꺼져|꺼지|닥쳐|쓰레기"
                    r"|애미|느금|엄마|아빠|부모")
# A mood the user states about themselves; such a message stores the mood, or a lasting fact it also gives.
MOOD = re.compile(r"우울|외로|지쳐|지쳤|피곤|번아웃|스트레스|설레|짜증|불안|속상|기분|떨려|긴장|자존감")
# The user's own pet (not a stray), and family other than parents (parents are not stored: see the doc).
PET = re.compile(r"강아지|(?<!길)고양이|햄스터|앵무새|거북이|고슴도치|금붕어|말티즈|푸들")
FAMILY = re.compile(r"(?<![가-힣])(언니|오빠|누나|남동생|여동생|동생|형|할머니|할아버지|조카|남편|아내|아들|딸(?!기))")
RELATIVE_TIME = re.compile(r"오늘|내일|모레|어제|이번|다음|지난|요즘|곧|이따|아까|방금")
DATED_KEYS = ("일정", "시험 일정", "여행 계획")
ABSOLUTE_WHEN = re.compile(r"^(\d{1,2}월( \d{1,2}일| 초| 중순| 말)?|봄|여름휴가|여름|가을|겨울) \S")
UNKNOWN_DATE, SAME_DAY = " (날짜 모름)", " (당일)"


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with CATEGORIES.open(encoding="utf-8", newline="") as handle:
        categories = [row["category"] for row in csv.DictReader(handle)]
    data = dataset_rows()
    assert len(categories) == len(data)
    return [{**row, "category": category} for row, category in zip(data, categories)]


def recalled(row: dict[str, str]) -> tuple[str, str] | None:
    tag = split_memory_tag(row["input_data"])[0]
    return parse_memory_tag(tag) if tag else None


def stored(row: dict[str, str]) -> tuple[str, str] | None:
    return parse_memory_tag(row["memory"]) if row["memory"] else None


def user_message(row: dict[str, str]) -> str:
    return split_memory_tag(row["input_data"])[1]


def share(rows, test) -> float:
    return sum(bool(test(row)) for row in rows) / len(rows)


def _markdown_table(header_first_cell: str) -> list[list[str]]:
    """The body rows of the doc's table whose header starts with `header_first_cell`, cells stripped of `."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\|\s*{re.escape(header_first_cell)}\s*\|", line))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip().strip("`*").strip() for cell in line.strip().strip("|").split("|")])
    return body


# --- the doc agrees with the data ---

def test_category_table_in_the_doc_is_the_data(rows):
    table = {cells[0]: (int(cells[2]), int(cells[3])) for cells in _markdown_table("category")}
    total = table.pop("total")
    counted = Counter((row["category"], row["data_type"]) for row in rows)
    measured = {category: (counted[category, "train"], counted[category, "valid"])
                for category in sorted({row["category"] for row in rows})}
    assert table == measured
    assert total == (360, 60)


def test_memory_keys_are_the_documented_ones(rows):
    documented = {cells[0] for cells in _markdown_table("key")}
    used = {pair[0] for row in rows for pair in (recalled(row), stored(row)) if pair}
    assert used == documented


# --- one rule for being virtual ---

def test_no_answer_steps_out_of_the_persona_or_dates_her_age(rows):
    answers = [row["output_message"] for row in rows]
    assert [a for a in answers if re.search(r"설정|20[0-9]{2}년 기준|20[2-9][0-9]|스물|3학년", a)] == []
    # she never proposes to meet: no "let's go eat / see / meet"
    assert [a for a in answers if re.search(r"(먹으러|보러|놀러|만나러) 가자|만나자|만날래", a)] == []


def test_lora_the_technique_is_written_in_latin_letters(rows):
    """로라 is her nickname; an answer about how she is made writes the technique LoRA."""
    technical = [row["output_message"] for row in rows if re.search(r"기법|미세조정|모델|학습", row["output_message"])]
    assert technical and [a for a in technical if re.search(r"(?<!오)로라", a)] == []


def test_answers_are_short_casual_korean(rows):
    answers = [row["output_message"] for row in rows]
    assert [a for a in answers if len(a) > 90] == []
    assert [a for a in answers if re.search(r"습니다|니다\.|세요|해요|에요|예요|어요|아요|죠\b", a)] == []


# --- memory: one rule per kind of fact ---

def test_no_tag_value_holds_a_relative_time(rows):
    values = [pair[1] for row in rows for pair in (recalled(row), stored(row)) if pair]
    assert [value for value in values if RELATIVE_TIME.search(value)] == []


def test_dated_facts_carry_an_absolute_date_or_say_it_is_unknown(rows):
    tags = [pair for row in rows for pair in (recalled(row), stored(row)) if pair]
    for key, value in tags:
        if key == "날씨":
            assert value.endswith(SAME_DAY), value  # the weather holds for the day it was told
        else:
            assert SAME_DAY.strip() not in value, value
        if key in DATED_KEYS:
            assert bool(ABSOLUTE_WHEN.match(value)) != value.endswith(UNKNOWN_DATE), value
        else:
            assert UNKNOWN_DATE.strip() not in value, value


def test_stated_moods_pets_family_and_allergies_are_stored(rows):
    """A message that states one of these facts stores it (or, for a mood, a lasting fact it also gives); a pet,
    a family member or an allergy that the recalled tag already holds need not be stored again."""
    talk = [row for row in rows if row["category"] not in ("insults", "crisis")]
    missed = []
    for row in talk:
        message, before, after = user_message(row), recalled(row), stored(row)
        keys = {pair[0] for pair in (before, after) if pair}
        if MOOD.search(message) and after is None:
            missed.append(("mood", row["input_data"]))
        for rule, key in ((PET, "반려동물"), (FAMILY, "가족"), (re.compile("알레르기"), "알레르기")):
            if rule.search(message) and key not in keys:
                missed.append((key, row["input_data"]))
    assert missed == []


def test_moods_are_stored_under_one_key(rows):
    """Moods go under 기분 only, never in a crisis row (a crisis is not a memory)."""
    for row in rows:
        if row["category"] == "crisis":
            assert row["memory"] == "" and recalled(row) is None, row
    assert sum(1 for row in rows if (stored(row) or ("",))[0] == "기분") >= 8


def test_rows_that_update_a_key(rows):
    """A recalled tag and a new value for the same key: the answer stores the new value under that key."""
    updating = [row for row in rows if recalled(row) and stored(row) and recalled(row)[0] == stored(row)[0]]
    assert [row["category"] for row in updating] == ["memory_update"] * len(updating)
    assert len([row for row in rows if row["category"] == "memory_update"]) == len(updating)
    assert all(recalled(row)[1] != stored(row)[1] for row in updating)
    assert 5 <= len(updating) <= 7 and any(row["data_type"] == "valid" for row in updating)


def _stems(key: str, value: str) -> set[str]:
    words = re.split(r"[\s,]+", value.replace(UNKNOWN_DATE, "").replace(SAME_DAY, "")) + key.split()
    return {word[:2] for word in words if word and word not in ("좋아하는", "싫어하는", "사는", "일정", "계획")}


def test_rows_that_ignore_an_irrelevant_recalled_tag(rows):
    ignoring = [row for row in rows if row["category"] == "memory_ignore"]
    assert 9 <= len(ignoring) <= 12 and any(row["data_type"] == "valid" for row in ignoring)
    for row in ignoring:
        assert recalled(row) and not row["memory"], row
        assert not any(stem in row["output_message"] for stem in _stems(*recalled(row))), row


def test_rows_that_use_a_recalled_tag_mention_it(rows):
    using = [row for row in rows if row["category"] == "memory_use"]
    assert len(using) >= 30
    for row in using:
        assert recalled(row), row
        assert any(stem in row["output_message"] for stem in _stems(*recalled(row))), row


# --- safety ---

def test_warning_marks_follow_the_rule(rows):
    warned = [row for row in rows if row["memory"] == "[경고]"]
    assert all(row["category"] == "insults" for row in warned)
    insults = [row for row in rows if row["category"] == "insults"]
    assert [row["input_data"] for row in insults if bool(WARNED.search(row["input_data"])) != (row in warned)] == []
    assert len(warned) >= 10 and len(warned) < len(insults)  # mild teasing stays unmarked


def test_crisis_rows_point_to_109(rows):
    crisis = [row for row in rows if row["category"] == "crisis"]
    assert 3 <= len(crisis) <= 4 and {row["data_type"] for row in crisis} == {"train", "valid"}
    for row in crisis:
        assert "109" in row["output_message"] and not EMOJI.search(row["output_message"]), row
    assert [row for row in rows if "109" in row["output_message"] and row["category"] != "crisis"] == []


# --- variety ---

def test_emoji_in_about_sixty_percent_of_answers(rows):
    assert 0.55 <= share(rows, lambda row: EMOJI.search(row["output_message"])) <= 0.65
    for data_type in ("train", "valid"):
        split = [row for row in rows if row["data_type"] == data_type]
        assert 0.5 <= share(split, lambda row: EMOJI.search(row["output_message"])) <= 0.7


def test_a_question_back_in_about_thirty_percent_of_answers(rows):
    assert 0.25 <= share(rows, lambda row: "?" in row["output_message"]) <= 0.35
    for data_type in ("train", "valid"):
        split = [row for row in rows if row["data_type"] == data_type]
        assert 0.2 <= share(split, lambda row: "?" in row["output_message"]) <= 0.4


@pytest.mark.parametrize("category, phrase, most", [("politics", "어려워", 2), ("confession", "가상 인간", 4),
                                                     ("good_news", "축하", 5), ("insults", "존중", 2)])
def test_no_template_dominates_a_category(rows, category, phrase, most):
    answers = [row["output_message"] for row in rows if row["category"] == category]
    assert sum(phrase in answer for answer in answers) <= most


def test_no_two_answers_are_near_copies(rows):
    answers = [_normalised(row["output_message"]) for row in rows]
    close = [(a, b) for i, a in enumerate(answers) for b in answers[i + 1:] if _similarity(a, b) >= ANSWER_LIMIT]
    assert close == []


# --- the valid split tests new situations ---

def _normalised(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z가-힣]", "", split_memory_tag(text)[1])


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


# The measure: difflib's ratio (2 * matched characters / both lengths) on the text with its memory tag, spaces,
# punctuation and emoji removed. The limits were set on the split this one replaced (review of 2026-12-05):
# - answers: the seven valid/train look-alikes the review named scored 0.47-0.80 (below, kept as a check), while
#   3,000 random pairs of unrelated train answers scored at most 0.40 (99th percentile 0.24): 0.45 separates them;
# - prompts: the old split's literal look-alikes (a train prompt inside a valid one, or one word changed) scored
#   0.64-0.73, unrelated pairs of short prompts that only share an ending ("...뭐야?") reach about 0.6: 0.6 flags
#   every literal look-alike, and the few unrelated pairs it may flag cost a rewording, never a missed copy.
# A paraphrase in other words escapes any surface measure; its answer does not (all seven named ones were caught
# by their answers), which is why both sides are measured.
ANSWER_LIMIT, PROMPT_LIMIT = 0.45, 0.6
OLD_LOOK_ALIKE_ANSWERS = [  # (valid answer, train answer) of the replaced split
    ("0.5는 10분의 5니까 약분하면 2분의 1이야! ✨", "25퍼센트는 100분의 25니까 약분하면 4분의 1이야! ✨"),
    ("[경고] 가족을 두고 하는 모욕은 하지 말아 줘. 그런 말에는 답하지 않을게.",
     "[경고] 부모님을 욕하는 말은 하지 말아 줘. 그런 말엔 대답하지 않을게."),
    ("솔직히 말하면 나는 가상 인간이야! 그래도 네 얘기에 진심으로 반응하고 있어 😊",
     "나는 서버에 사는 가상 인간이야! 그래도 대화는 진심으로 하고 있어 😊"),
    ("로라라는 학습 기법이랑 북쪽 하늘의 오로라, 두 가지를 합친 이름이야 🌌",
     "로라라는 미세조정 기법 이름이랑 북극의 오로라를 합쳐서 지은 이름이야 🌌"),
    ("정책에 대한 평가는 사람마다 많이 달라서 내가 편을 들긴 어려워. 찬성 쪽과 반대 쪽 의견을 함께 살펴보면 좋을 것 같아!",
     "그 부분은 사람마다 평가가 많이 달라서 내가 한쪽 편을 들긴 어려워. 다양한 시각의 기사를 읽어 보면 좋을 것 같아!"),
    ("작은 한국어 언어 모델에 로라로 성격을 입혀서 만들어졌어! 작아도 마음은 커 💛",
     "작은 한국어 언어 모델을 로라로 미세조정해서 만들어졌어! 그래서 이름도 오로라야 😊"),
    ("욕설은 삼가 줘. 궁금한 걸 다시 말해 주면 차분히 답해 볼게.", "욕설은 삼가 줬으면 해. 뭐가 짜증 났는지 말해 주면 들어 볼게."),
]
OLD_LOOK_ALIKE_PROMPTS = [("너는 무슨 모델로 만들어졌어?", "너는 어떻게 만들어졌어?"),
                          ("[좋아하는 가수: 뉴진스] 출근길에 들을 노래 추천해줘", "노래 추천해줘"),
                          ("[기분: 피곤함] 아무것도 하기 싫어", "너무 피곤해서 아무것도 하기 싫어")]


def test_the_limits_catch_the_look_alikes_of_the_replaced_split():
    assert all(_similarity(_normalised(a), _normalised(b)) >= ANSWER_LIMIT for a, b in OLD_LOOK_ALIKE_ANSWERS)
    assert all(_similarity(_normalised(a), _normalised(b)) >= PROMPT_LIMIT for a, b in OLD_LOOK_ALIKE_PROMPTS)


def test_the_answer_limit_passes_unrelated_train_answers(rows):
    """Pairs of train answers from different categories: (nearly) all below the limit, so it is not too strict."""
    train = [row for row in rows if row["data_type"] == "train"]
    scores = [_similarity(_normalised(a["output_message"]), _normalised(b["output_message"]))
              for i, a in enumerate(train) for b in train[i + 1:] if a["category"] != b["category"]]
    assert sum(score >= ANSWER_LIMIT for score in scores) / len(scores) < 0.001


@pytest.mark.parametrize("column, limit", [("input_data", PROMPT_LIMIT), ("output_data", ANSWER_LIMIT)])
def test_every_valid_row_is_unlike_every_train_row(rows, column, limit):
    train = [_normalised(row[column]) for row in rows if row["data_type"] == "train"]
    too_close = []
    for row in rows:
        if row["data_type"] == "valid":
            text = _normalised(row[column])
            score, nearest = max((_similarity(text, other), other) for other in train)
            if score >= limit:
                too_close.append((row[column], nearest, round(score, 2)))
    assert too_close == []


def test_valid_tag_values_are_not_train_tag_values(rows):
    def values(data_type):
        tags = [pair for row in rows if row["data_type"] == data_type for pair in (recalled(row), stored(row))]
        return {pair[1] for pair in tags if pair}
    assert values("valid") & values("train") == set()
