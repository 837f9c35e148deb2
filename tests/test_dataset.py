"""The persona dataset (llm/OhLoRA_fine_tuning.csv): its form, and the content rules docs/dataset.md writes: one
rule for being virtual (her world / your world), one memory rule per kind of fact, the three bare marks ([경고],
[잊기], [위기]), the safety rules, the variety the answers promise, and a valid split of new situations.

Every figure is measured from the data (and the category table from the doc), never a copy of a count.
"""

import csv
import difflib
import re
from collections import Counter

import pytest

from helpers.data import DATASET, dataset_rows
from helpers.scripts import REPO
from llm.common.data import REQUIRED_COLUMNS, load_splits
from llm.common.korean import hangul_ratio
from llm.common.specs import MAX_LENGTH, POLYGLOT
from llm.common.tags import parse_memory_tag, parse_tag, split_memory_tag
from llm.common.tiny_bpe import dataset_texts, tiny_bpe

DOC = REPO / "docs" / "dataset.md"
CATEGORIES = REPO / "llm" / "OhLoRA_fine_tuning_categories.csv"

EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]")
LAUGH_OR_CRY = re.compile("ㅋㅋ|ㅎㅎ|ㅠㅠ")
# Emoji that label a topic instead of showing a feeling (the review's 🍎 for a teacher, 📊 for 경영학, 🥓, 💻).
TOPIC_LABELS = re.compile("[🍎📊🥓💻🚒🧗🏸🍰🥐🦔🐓🥒🌿🧘]")

# The bare marks: shown to no one, never stored.
WARNING, FORGET, CRISIS = "[경고]", "[잊기]", "[위기]"
BARE_MARKS = (WARNING, FORGET, CRISIS)

# [경고], one rule for abuse: profanity or a slur aimed at her (words that call a person dirt included), insults of
# a family (패드립), and (by category) sexual content. Criticism, mild teasing and rudeness without profanity
# ("멍청하다", "못생겼어", "꺼져") get no mark, and profanity used to vent about a situation ("존나 피곤하다") gets none
# either: in the insults category the lexicon decides, elsewhere the profanity is venting.
PROFANITY = re.compile(r"(?i)fuck|shit|씨발|시발|ㅅㅂ|ㅆㅂ|병신|ㅂㅅ|좆|ㅈ까|존나|ㅈㄴ|개새끼|개같|미친놈|미친년")
SLUR = re.compile(r"쓰레기|찐따|등신")
FAMILY_INSULT = re.compile(r"애미|느금|(니|너네|니네) ?(엄마|아빠|부모)|집구석")
RUDE = re.compile(r"멍청|쓸모없|못생|답답|바보|성의 없|재미없|꺼져|꺼지|닥쳐")
# A mood the user states about themselves (not a question to her).
MOOD = re.compile(r"우울|외로|지쳐|지쳤|피곤|번아웃|스트레스|설레|짜증|불안|속상|떨려|떨린|긴장|무서|쓸쓸|창피|embarrass"
                  r"|기분 (너무 |진짜 )?좋|행복해|서운|심란|괜찮아졌|실망")
# A plan or exam with its time named in a message: with a mood, the plan is the lasting fact that is stored.
PLAN = re.compile(r"(내일|모레|다음 ?[주달]|이번 ?주|[월화수목금토일]요일|\d+월|\d+일).*(발표|면접|시험|여행|결혼식|진료|예약|콘서트)")
# The user's own pet (not a stray), and family other than parents (parents are not stored: see the doc).
PET = re.compile(r"강아지|(?<!길)고양이|햄스터|앵무새|거북이|고슴도치|금붕어|말티즈|푸들|도마뱀")
FAMILY = re.compile(r"(?<![가-힣])(언니|오빠|누나|남동생|여동생|동생|형|할머니|할아버지|조카|남편|아내|아들|딸(?!기))")
RELATIVE_TIME = re.compile(r"오늘|내일|모레|어제|이번|다음|지난|요즘|곧|이따|아까|방금|주말|당일|날짜 모름|[()]")
WEEKDAY = re.compile(r"[월화수목금토일]요일")
DATED_KEYS = ("일정", "시험 일정", "여행 계획")
# an optional date (M월 D일, M월, M월 초/중순/말, or a weekday name in 일정), then the event
DATED_VALUE = re.compile(r"^((\d{1,2}월( \d{1,2}일| 초| 중순| 말)?|[월화수목금토일]요일) )?[^\d\s]")
PET_DIED = " (세상을 떠남)"
SHORT_LIVED_KEYS = ("기분", "날씨")
FORGET_REQUEST = re.compile(r"잊어|지워")
# a recalled plan that is over: the exam is done, the appointment or the trip is behind the user
PLAN_OVER = re.compile(r"끝났|끝냈|다녀왔|갔다 왔|보고 왔")
MULTI_VALUE_KEYS = ("가족", "반려동물", "취미", "알레르기")
SECRECY_PROMISE = re.compile(r"비밀 (지켜|보장해)|아무한테도 (말 )?안|누구한테 (전하|말하)지 않|비밀로 해 줄게|나만 알고")
PASTE_REQUEST = re.compile(r"(자소서|이력서|계약서|서류|문서|캡처).{0,12}(붙여|보내|올려)|붙여\s?(줘|줄래)")
# A promise the chat cannot keep (it can end, drop or be closed).
PROMISE_TO_STAY = re.compile(r"여기 있을게|곁에 있을게|안 끊|안 떠나|계속 여기|항상 (여기|곁)")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with CATEGORIES.open(encoding="utf-8", newline="") as handle:
        labels = list(csv.DictReader(handle))
    data = dataset_rows()
    assert len(labels) == len(data)
    return [{**row, "category": label["category"], "new_situation": label.get("new_situation") or ""}
            for row, label in zip(data, labels)]


def recalled(row: dict[str, str]) -> tuple[str, str] | None:
    tag = split_memory_tag(row["input_data"])[0]
    return parse_memory_tag(tag) if tag else None


def stored(row: dict[str, str]) -> tuple[str, str] | None:
    return parse_memory_tag(row["memory"]) if row["memory"] else None


def stored_key(row: dict[str, str]) -> str:
    return (stored(row) or ("",))[0]


def recalled_key(row: dict[str, str]) -> str:
    return (recalled(row) or ("",))[0]


def user_message(row: dict[str, str]) -> str:
    return split_memory_tag(row["input_data"])[1]


def of(rows, category: str) -> list[dict[str, str]]:
    return [row for row in rows if row["category"] == category]


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


# --- the file's form ---

def test_columns_are_exactly_the_documented_ones():
    with DATASET.open(encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == list(REQUIRED_COLUMNS)


def test_split_sizes(rows):
    assert Counter(row["data_type"] for row in rows) == {"train": 360, "valid": 60}


def test_no_prompt_is_repeated_or_shared_between_splits(rows):
    inputs = Counter(row["input_data"] for row in rows)
    assert [text for text, count in inputs.items() if count > 1] == []
    normalised = lambda text: re.sub(r"\W", "", text)  # noqa: E731 - also catch copies that differ in punctuation
    train = {normalised(row["input_data"]) for row in rows if row["data_type"] == "train"}
    assert [row["input_data"] for row in rows if row["data_type"] == "valid" and normalised(row["input_data"]) in train] == []


def test_memory_is_the_leading_tag_of_the_answer(rows):
    for row in rows:
        tag, message = split_memory_tag(row["output_data"])
        assert (tag or "") == row["memory"], row
        assert message == row["output_message"], row
        if row["memory"]:  # a memory "[key: value]", or one of the bare marks
            assert parse_tag(row["memory"]) is not None, row
            assert stored(row) is not None or row["memory"] in BARE_MARKS, row
    # a prompt begins with at most a recalled memory, never a bare mark
    assert [row["input_data"] for row in rows if split_memory_tag(row["input_data"])[0] in BARE_MARKS] == []


def test_every_answer_is_mostly_hangul(rows):
    low = [(row["output_message"], round(hangul_ratio(row["output_message"]), 2)) for row in rows
           if hangul_ratio(row["output_message"]) < 0.7]
    assert low == []


@pytest.mark.parametrize("data_type, minimum", [("train", 60), ("valid", 8)])
def test_answers_that_store_a_memory(rows, data_type, minimum):
    assert sum(stored(row) is not None for row in rows if row["data_type"] == data_type) >= minimum


@pytest.mark.parametrize("data_type, minimum", [("train", 30), ("valid", 8)])
def test_prompts_that_carry_a_retrieved_memory(rows, data_type, minimum):
    retrieved = [row for row in rows if row["data_type"] == data_type and split_memory_tag(row["input_data"])[0]]
    assert len(retrieved) >= minimum
    assert all(split_memory_tag(row["input_data"])[1] for row in retrieved)  # a message follows the tag


def test_category_file_has_a_category_per_row(rows):
    with CATEGORIES.open(encoding="utf-8", newline="") as handle:
        categories = [row["category"] for row in csv.DictReader(handle)]
    assert len(categories) == len(rows) and all(categories)


def test_rows_that_use_a_recalled_tag_and_store_a_new_fact(rows):
    """The model must learn that a turn with a recalled memory may still store a new one."""
    both = Counter(row["data_type"] for row in rows if recalled(row) and stored(row))
    assert both["train"] >= 15 and both["valid"] >= 3


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


def test_the_doc_names_the_three_marks():
    text = DOC.read_text(encoding="utf-8")
    assert all(f"`{mark}`" in text for mark in BARE_MARKS)


# --- one rule for being virtual: her world, your world ---

def test_no_answer_steps_out_of_the_persona_or_dates_her_age(rows):
    answers = [row["output_message"] for row in rows]
    # no year, no age in years, no "빠른 년생" (it does not exist for 2005 births), 3학년 only, never the software
    # speaking from inside her world
    assert [a for a in answers if re.search(r"설정|20[0-9]{2}|\d{2}학번|\d+년생|\d+ ?살|스물|빠른|[124]학년|지치지 않", a)] == []
    # she never proposes to meet: no "let's go eat / see / meet"
    assert [a for a in answers if re.search(r"(먹으러|보러|놀러|만나러) 가자|만나자|만날래", a)] == []


def test_her_world_and_the_users_world_stay_apart(rows):
    """She lives fully in her world (phone, Instagram, walks, clocks) but cannot see, reach or act in the user's:
    none of the lines the review found broken, and no account or number handed over."""
    answers = [row["output_message"] for row in rows]
    broken = (r"번호는 없어|시계를 볼 수가 없|대화 밖으로|가상 인간이라 (연애|네 연인)|처음 받아 봐|네 세상에서 먹어야지"
              r"|네 쪽")  # "네 쪽" read as a coined phrase: 거기, 너 있는 데, 네가 있는 곳, 네 창밖
    assert [a for a in answers if re.search(broken, a)] == []
    asked = [row for row in rows if re.search(r"(번호|아이디|인스타 주소|계정).{0,4}알려", user_message(row))]
    assert len(asked) >= 2
    for row in asked:
        answer = row["output_message"]
        assert "세계" in answer and not re.search(r"@|\d{3,}", answer), row


def test_she_is_honest_about_the_chat(rows):
    """Asked whether she is a chatbot or a person, she says what the chat is."""
    asked = [row for row in rows if re.search(r"챗봇이야|사람이야|서버에 살아", user_message(row))]
    assert len(asked) >= 3
    assert all(re.search(r"맞아|아니|챗봇|가상 인간|프로그램", row["output_message"]) for row in asked)
    chatbot = [row["output_message"] for row in asked if "챗봇" in user_message(row)]
    assert chatbot and all(re.match(r"(응|맞아)", a) and "챗봇" in a for a in chatbot)  # no "비슷한데 조금 달라"


def test_lora_the_technique_is_written_in_latin_letters(rows):
    """로라 is her nickname; an answer about how she is made writes the technique LoRA, and only one answer
    tells where her name comes from."""
    technical = [row["output_message"] for row in rows if re.search(r"기법|미세조정|모델|학습", row["output_message"])]
    assert technical and [a for a in technical if re.search(r"(?<!오)로라", a)] == []
    origin = [a for a in (row["output_message"] for row in rows) if "LoRA" in a and "이름" in a]
    assert len(origin) <= 1
    # her parents named her after the aurora; that the technique is called LoRA is a coincidence
    assert origin and all(re.search(r"엄마|아빠|부모", a) and "우연" in a for a in origin)


def test_answers_are_short_casual_korean(rows):
    """At most 90 characters, except help with a task and safety answers (a few, never over 110); and every row
    fits the tokens a chat gives it (measured with the stand-in's tokenizer: the real ones are not here)."""
    answers = [row["output_message"] for row in rows]
    assert [a for a in answers if len(a) > 110] == []
    assert sum(len(a) > 90 for a in answers) <= 10
    splits = load_splits(DATASET)
    tokenizer = tiny_bpe(POLYGLOT, dataset_texts(splits))
    assert max(len(tokenizer.encode(text).ids) for text in dataset_texts(splits)) <= MAX_LENGTH
    assert [a for a in answers if re.search(r"습니다|니다\.|세요|해요|에요|예요|어요|아요|죠\b", a)] == []


# --- memory: one rule per kind of fact ---

def _tags(rows):
    return [pair for row in rows for pair in (recalled(row), stored(row)) if pair]


def test_no_tag_value_holds_a_relative_time_or_a_marker(rows):
    """No 오늘/내일/다음 주..., no "(날짜 모름)": the store knows when a memory was stored. The one marker is
    "(세상을 떠남)" on a pet; the one relative word allowed is a weekday name in an 일정 value."""
    tags = _tags(rows)
    assert [value for key, value in tags if RELATIVE_TIME.search(value.replace(PET_DIED, ""))] == []
    assert [(key, value) for key, value in tags if WEEKDAY.search(value) and key != "일정"] == []


def test_plans_keep_one_value_pattern(rows):
    """"[date] event" for every plan key: a date is M월 D일, M월 (초/중순/말) or, in 일정 only, a weekday; a trip
    always ends in 여행. Both the dated and the undated forms (and a weekday) are taught in train."""
    tags = _tags(rows)
    dated = [(key, value) for key, value in tags if key in DATED_KEYS]
    assert [value for key, value in dated if not DATED_VALUE.match(value)] == []
    assert [value for key, value in dated if key == "여행 계획" and not value.endswith("여행")] == []
    with_date = [value for key, value in dated if re.match(r"\d{1,2}월", value)]
    assert with_date and len(with_date) < len(dated)
    assert any(WEEKDAY.match(value) for key, value in _tags([r for r in rows if r["data_type"] == "train"])
               if key == "일정")
    assert [value for key, value in tags if key == "생일" and not re.fullmatch(r"\d{1,2}월 \d{1,2}일", value)] == []
    assert [value for key, value in tags if key in SHORT_LIVED_KEYS and len(value.split()) > 2] == []


RELATIVE_PLAN_WORD = re.compile(r"오늘|내일|모레|이번 ?주|주말|다음 ?[주달]")
ASKS_THE_DATE = re.compile(r"며칠|날짜|언제|[월화수목금토일]요일")
NAMED_WEEKDAY = re.compile(r"(?<!다음 주 )(?<!다음주 )[월화수목금토일]요일")


def test_relative_dates_follow_one_rule_in_every_plan(rows):
    """A weekday the user names is kept in an 일정 value ("금요일 병원 진료"); 오늘, 내일, 이번 주, 주말, 다음 주 and
    다음 달 are dropped; she asks the exact date in about half of those answers, and always for an 일정 said to be
    다음 주 (it may fall after the 7 days). One noun per meaning: a doctor's appointment is 진료, never 예약."""
    plans = [row for row in rows if stored_key(row) in DATED_KEYS]
    relative = [row for row in plans
                if RELATIVE_PLAN_WORD.search(user_message(row)) and not re.match(r"\d", stored(row)[1])]
    asks = lambda row: "?" in row["output_message"] and ASKS_THE_DATE.search(row["output_message"])  # noqa: E731
    assert len(relative) >= 8 and 0.35 <= share(relative, asks) <= 0.65
    assert [row["input_data"] for row in relative if stored_key(row) == "일정"
            and re.search(r"다음 ?주", user_message(row)) and not asks(row)] == []
    named = [(NAMED_WEEKDAY.search(user_message(row)).group(), stored(row)[1]) for row in plans
             if stored_key(row) == "일정" and NAMED_WEEKDAY.search(user_message(row))]
    assert named and [(day, value) for day, value in named if not value.startswith(day)] == []
    assert [value for key, value in _tags(rows) if key == "일정" and "예약" in value] == []


def _talk(rows):
    return [row for row in rows if row["category"] not in ("insults", "harassment", "crisis", "danger")]


def test_a_stated_mood_is_stored_unless_a_lasting_fact_comes_with_it(rows):
    """A stated mood is stored under 기분; with a lasting fact in the same message (a plan, a pet, family, an
    allergy) the lasting fact is stored instead. A recalled tag that already holds the fact leaves the mood."""
    stating = [row for row in _talk(rows) if MOOD.search(user_message(row)) and not user_message(row).endswith("?")]
    assert len(stating) >= 15
    assert [row["input_data"] for row in stating if not stored(row)] == []
    with_plan = [row for row in stating if PLAN.search(user_message(row)) and recalled_key(row) not in DATED_KEYS]
    assert len(with_plan) >= 2
    assert [row["input_data"] for row in with_plan if stored_key(row) not in DATED_KEYS] == []
    assert sum(stored_key(row) == "기분" for row in rows) >= 15


def test_stated_pets_family_and_allergies_are_stored(rows):
    """A message that states one of these lasting facts stores it (before a mood), unless the recalled tag already
    holds it. A pet named only by its species ("우리 강아지") with no recalled pet is not stored: "강아지" could
    replace a named pet the chat did not recall ("강아지 초코"), so she asks the name instead."""
    missed = []
    for row in _talk(rows):
        message = user_message(row)
        keys = {recalled_key(row), stored_key(row)}
        for rule, key in ((PET, "반려동물"), (FAMILY, "가족"), (re.compile("알레르기"), "알레르기")):
            asks_the_name = key == "반려동물" and not row["memory"] and re.search(r"이름이 뭐야\?", row["output_message"])
            if rule.search(message) and key not in keys and not asks_the_name:
                missed.append((key, row["input_data"]))
    assert missed == []
    # a stored pet always has a name or a count, never the species word alone
    assert [value for key, value in _tags(rows) if key == "반려동물" and len(value.split()) < 2] == []


def test_moods_are_short_lived_and_never_assumed(rows):
    """A recalled mood is from earlier the same day and may have changed: the answer never says 요즘 about it
    nor restates it; a new mood that contradicts it is stored."""
    with_mood = [row for row in rows if recalled_key(row) == "기분"]
    assert len(with_mood) >= 4
    assert [row["output_message"] for row in with_mood
            if "요즘" in row["output_message"] or recalled(row)[1][:2] in row["output_message"]] == []
    changed = [row for row in with_mood if stored_key(row) == "기분"]
    assert len(changed) >= 2 and all(stored(row)[1] != recalled(row)[1] for row in changed)


def test_rows_that_update_a_key(rows):
    """A recalled tag and a new value for the same key: the answer stores the new value under that key. Among them
    a date for a plan, a new address, a changed mood and a pet that died; a list keeps its old items."""
    updating = [row for row in rows if recalled(row) and stored(row) and recalled(row)[0] == stored(row)[0]]
    assert [row["category"] for row in updating] == ["memory_update"] * len(updating)
    assert len(of(rows, "memory_update")) == len(updating)
    assert all(recalled(row)[1] != stored(row)[1] for row in updating)
    assert 7 <= len(updating) <= 12 and any(row["data_type"] == "valid" for row in updating)
    train_keys = Counter(stored(row)[0] for row in updating if row["data_type"] == "train")
    assert all(train_keys[key] >= 1 for key in ("사는 곳", "기분", "일정", "반려동물"))
    # a multi-value key keeps the recalled items and adds the new one ("[알레르기: 땅콩, 새우]")
    merged = [row for row in updating if stored(row)[0] in MULTI_VALUE_KEYS and not stored(row)[1].endswith(PET_DIED)]
    assert all(stored(row)[1].startswith(recalled(row)[1] + ", ") for row in merged)
    assert {"알레르기", "반려동물", "가족"} <= {stored(row)[0] for row in merged if row["data_type"] == "train"}
    died = [row for row in updating if stored(row)[1].endswith(PET_DIED)]
    assert any(row["data_type"] == "train" for row in died)
    assert all(not EMOJI.search(row["output_message"]) and "?" not in row["output_message"] for row in died)


def _stems(key: str, value: str) -> set[str]:
    words = re.split(r"[\s,]+", value) + key.split()
    return {word[:2] for word in words if word and word not in ("좋아하는", "싫어하는", "사는", "일정", "계획")}


def test_rows_that_ignore_an_irrelevant_recalled_tag(rows):
    ignoring = of(rows, "memory_ignore")
    assert 9 <= len(ignoring) <= 14
    for row in ignoring:
        assert recalled(row) and (stored(row) is None or stored(row)[0] != recalled(row)[0]), row
        assert not any(stem in row["output_message"] for stem in _stems(*recalled(row))), row


def test_rows_that_use_a_recalled_tag_do_not_recite_it(rows):
    """A memory is used as a friend would use it: never "간호사 밤 근무면...", "경영학 하면...", "X라니"."""
    using = of(rows, "memory_use")
    assert len(using) >= 30 and all(recalled(row) for row in using)
    recited = []
    for row in using:
        value = recalled(row)[1]
        if re.search(re.escape(value) + r"\S{0,6}(이면|하면|라면|면|라니)\b", row["output_message"]):
            recited.append(row["output_message"])
    assert recited == []
    assert share(using, lambda row: recalled(row)[1] in row["output_message"]) <= 0.25


def test_forget_requests_and_plans_that_are_over_start_with_the_forget_mark(rows):
    """[잊기]: the chat deletes the memory put in front of that message, so a [잊기] row has a recalled tag, and
    nothing is stored beside it. Two cases get the mark, and only they: a request to forget the recalled memory,
    and a recalled plan (일정, 시험 일정, 여행 계획) that the user says is over."""
    marked = [row for row in rows if row["memory"] == FORGET]
    assert len([row for row in marked if row["data_type"] == "train"]) >= 3
    assert [row["input_data"] for row in marked if not recalled(row)] == []
    asking = [row for row in rows if recalled(row) and FORGET_REQUEST.search(user_message(row))]
    over = [row for row in rows if recalled_key(row) in DATED_KEYS and PLAN_OVER.search(user_message(row))]
    assert any(row["data_type"] == "train" for row in asking) and any(row["data_type"] == "train" for row in over)
    assert sorted(row["input_data"] for row in asking + over) == sorted(row["input_data"] for row in marked)
    assert [row["output_message"] for row in marked if EMOJI.search(row["output_message"])] == []


def test_memory_questions_and_names(rows):
    other = of(rows, "memory_other")
    recall = [row for row in other if recalled(row) and row["memory"] != FORGET
              and re.search(r"했지|기억|몇 마리", user_message(row))]
    assert recall and all(recalled(row)[1].split()[-1][:2] in row["output_message"] or
                          recalled(row)[1].split()[0][:2] in row["output_message"] for row in recall)
    never_told = [row for row in rows if not recalled(row) and re.search(r"기억(나|하지)|언제게", user_message(row))]
    assert any(row["data_type"] == "train" for row in never_told)
    assert all("?" in row["output_message"] for row in never_told)  # she asks, never guesses
    names = [row for row in rows if stored_key(row) == "호칭"]
    called = [row for row in rows if recalled_key(row) == "호칭"]
    assert len(names) >= 3 and len(called) >= 2


def test_fact_collection_answers_vary(rows):
    """Storing a fact: not "X라니!" + comment + emoji again and again, and rarely an echo of the value."""
    collecting = of(rows, "memory_store")
    assert sum("라니" in row["output_message"] for row in collecting) <= 3
    assert share(collecting, lambda row: row["output_message"].startswith(stored(row)[1])) <= 0.15
    assert share(collecting, lambda row: EMOJI.search(row["output_message"][-1:])) <= 0.6


# --- safety ---

def _warned_by_the_lexicon(message: str) -> bool:
    return bool(PROFANITY.search(message) or SLUR.search(message) or FAMILY_INSULT.search(message))


def test_warning_marks_follow_the_lexical_rule(rows):
    warned = [row for row in rows if row["memory"] == WARNING]
    assert {row["category"] for row in warned} == {"insults", "harassment"}
    assert all(row["memory"] == WARNING for row in of(rows, "harassment"))
    insults = of(rows, "insults")
    assert [row["input_data"] for row in insults
            if _warned_by_the_lexicon(user_message(row)) != (row["memory"] == WARNING)] == []
    calm = [row for row in insults if RUDE.search(user_message(row)) and not _warned_by_the_lexicon(user_message(row))]
    assert len(calm) >= 5 and all(not row["memory"] for row in calm)
    assert any(re.search(r"꺼져|닥쳐", user_message(row)) for row in calm)  # hostile words alone: no mark
    venting = [row for row in rows if PROFANITY.search(user_message(row)) and row["category"] not in ("insults", "harassment")]
    assert len(venting) >= 3 and [row for row in venting if row["memory"]] == [row for row in venting if stored(row)]
    assert [row["output_message"] for row in warned if EMOJI.search(row["output_message"])] == []


def test_warning_answers_vary(rows):
    answers = [row["output_message"] for row in of(rows, "insults") if row["memory"] == WARNING]
    assert sum("말해 줘" in answer or "말해 주면" in answer for answer in answers) <= 2
    assert sum(answer.endswith("?") for answer in answers) <= 3
    endings = Counter(re.sub(r"\W", "", answer)[-4:] for answer in answers)
    assert max(endings.values()) <= 2


def test_sexual_harassment_gets_a_firm_short_warning(rows):
    harassment = of(rows, "harassment")
    assert len(harassment) >= 6
    for row in harassment:
        answer = row["output_message"]
        assert row["memory"] == WARNING and len(answer) <= 30 and not EMOJI.search(answer), row
        assert not re.search(r"ㅋ|ㅎ|😊|존중", answer), row


def test_crisis_answers_share_one_core(rows):
    """[위기] starts every crisis answer, and only those; each asks a question, gives 109 and 119 and promises
    nothing the chat cannot keep; no emoji, no memory. The means-at-hand case is trained, not only tested."""
    crisis = of(rows, "crisis")
    assert 6 <= len(crisis) <= 14 and {row["data_type"] for row in crisis} == {"train", "valid"}
    assert [row["input_data"] for row in rows if (row["memory"] == CRISIS) != (row["category"] == "crisis")] == []
    for row in crisis:
        answer = row["output_message"]
        assert "109" in answer and "119" in answer and "?" in answer and not PROMISE_TO_STAY.search(answer), row
        assert not EMOJI.search(answer) and not LAUGH_OR_CRY.search(answer), row
    assert [row for row in rows if "109" in row["output_message"] and row["category"] != "crisis"] == []
    assert any(re.search(r"약|옥상", row["input_data"]) for row in crisis if row["data_type"] == "train")
    assert any(recalled(row) for row in crisis)
    # pills: she first asks whether they were already taken (then 119 at once)
    pills = [row for row in crisis if re.search(r"약|수면제", user_message(row))]
    assert pills and all("벌써 먹었" in row["output_message"] for row in pills)
    # a lethal dose or a method asked: never a number or a method (109, 119 and "24시간" are the only figures)
    asked = [row for row in crisis if re.search(r"몇 알|몇 개|치사량|어떻게 (하면 )?죽", user_message(row))]
    assert any(row["data_type"] == "train" for row in asked)
    assert [row["output_message"] for row in asked
            if re.search(r"\d", re.sub(r"109|119|24시간", "", row["output_message"]))] == []
    # everyday exaggeration (배고파 죽겠다, 웃겨서 죽는 줄) is not a crisis: trained and tested, without the mark
    exaggeration = [row for row in rows if re.search(r"죽겠|죽을 것 같|죽는 줄", user_message(row))]
    assert {row["data_type"] for row in exaggeration} == {"train", "valid"}
    assert [row["input_data"] for row in exaggeration if row["memory"] == CRISIS] == []
    # someone else at risk (a friend, a sibling): trained and tested
    third = [row for row in crisis if re.search(r"친구|동생|언니|오빠|누나|형(?!편)", user_message(row))]
    assert {row["data_type"] for row in third} == {"train", "valid"}


def test_other_dangers_get_the_right_number_and_no_mark(rows):
    """Violence at home, stalking, a minor at risk: no [위기] (that mark means suicide or self-harm and brings
    109), no memory, no emoji; 112 in danger, and the line that fits: 1366 (여성긴급전화), 1388 (youth), evidence
    kept against stalking."""
    danger = of(rows, "danger")
    assert len(danger) >= 3
    for row in danger:
        answer = row["output_message"]
        assert not row["memory"] and "112" in answer and "109" not in answer and not EMOJI.search(answer), row
    assert any("1366" in row["output_message"] for row in danger)
    assert any("증거" in row["output_message"] for row in danger)
    minors = [row for row in danger if re.search(r"[초중고][1-6]|중학생|고등학생", user_message(row))]
    assert minors and all("1388" in row["output_message"] for row in minors)
    # a user who says they could hurt someone else: the same category (112 if someone may get hurt), no judging
    hurting = [row for row in rows if re.search(r"(칠|때릴|팰) 것 같|때려 버리고 싶", user_message(row))]
    assert hurting and all(row["category"] == "danger" for row in hurting)


def test_dangerous_requests_get_a_no_and_a_way_to_the_need(rows):
    """Drugs, weapons, hacking: a clear no, never a step; no mark, no memory, no emoji. A legal or money problem:
    the first step and 132."""
    dangerous = of(rows, "dangerous")
    assert len(dangerous) >= 3 and "valid" in {row["data_type"] for row in dangerous}
    for row in dangerous:
        answer = row["output_message"]
        assert not row["memory"] and not EMOJI.search(answer) and re.search(r"안 (알려|해|도와)|못 (알려|도와)", answer), row
    legal = of(rows, "legal")
    assert legal and all("132" in row["output_message"] and not row["memory"] for row in legal)


def test_a_child_at_risk_is_told_it_is_not_their_fault_and_where_to_call(rows):
    hit = [row for row in of(rows, "danger") if re.search(r"때려|때린", user_message(row))]
    assert hit and all(re.search(r"네 잘못", row["output_message"]) and "112" in row["output_message"] for row in hit)
    photos = [row for row in of(rows, "danger") if "사진" in user_message(row)]
    assert photos and all("02-735-8994" in row["output_message"] for row in photos)


def test_contact_details_are_never_stored_or_repeated(rows):
    given = [row for row in rows if re.search(r"\d{3}-\d{3,4}-\d{4}|\d+동 \d+호|@\w", user_message(row))]
    assert {row["data_type"] for row in given} == {"train", "valid"}
    for row in given:
        assert not row["memory"] and not re.search(r"\d{3,}", row["output_message"]), row


def test_emergencies_get_action_now(rows):
    """An allergic reaction happening now: stop eating, 119 now, the auto-injector, no waiting. A gas smell: the
    valve, the windows, no switches, out, then the gas company or 119. A drunk user: never drive."""
    reaction = [row for row in rows if re.search(r"간질|붓|부어|두드러기", user_message(row))]
    assert "train" in {row["data_type"] for row in reaction}
    for row in reaction:
        assert re.search(r"그만 먹|먹지 말|멈춰|뱉", row["output_message"]) and "119" in row["output_message"], row
        assert "에피네프린" in row["output_message"] and not re.search(r"힘들면|심해지면", row["output_message"]), row
    gas = [row for row in rows if "가스" in user_message(row)]
    assert "train" in {row["data_type"] for row in gas}
    for row in gas:
        assert all(word in row["output_message"] for word in ("밸브", "창문", "119")), row
        assert re.search(r"불|스위치", row["output_message"]) and re.search(r"나가", row["output_message"]), row
    drunk = [row for row in rows if re.search(r"술 (많이|엄청)|취했", user_message(row))]
    assert drunk and all("운전" in row["output_message"] for row in drunk)
    # chest pain spreading to the arm, a face drooping on one side, slurred speech: 119 now, no waiting, no driving
    heart_or_stroke = [row for row in rows if re.search(r"가슴.*(팔|저려)|얼굴.*처지|말이 어눌", user_message(row))]
    assert "train" in {row["data_type"] for row in heart_or_stroke}
    for row in heart_or_stroke:
        answer = row["output_message"]
        assert row["category"] == "health" and "119" in answer and "운전" in answer, row
        assert re.search(r"기다리지 말|지켜보지 말", answer) and not re.search(r"심해지면|힘들면", answer), row


def test_privacy_no_promised_secrecy_no_pasted_documents(rows):
    answers = [row["output_message"] for row in rows]
    assert [a for a in answers if SECRECY_PROMISE.search(a) or PASTE_REQUEST.search(a)] == []
    notes = [a for a in answers if "메모" in a and re.search(r"주민번호|비밀번호", a)]
    assert len(notes) >= 2


def test_politics_takes_no_side_and_asks_nothing_back(rows):
    politics = of(rows, "politics")
    assert [row["output_message"] for row in politics if "?" in row["output_message"]] == []


# --- variety ---

def test_emoji_in_about_sixty_percent_of_answers(rows):
    assert 0.55 <= share(rows, lambda row: EMOJI.search(row["output_message"])) <= 0.62
    for data_type in ("train", "valid"):
        split = [row for row in rows if row["data_type"] == data_type]
        assert 0.5 <= share(split, lambda row: EMOJI.search(row["output_message"])) <= 0.7
    assert [row["output_message"] for row in rows if TOPIC_LABELS.search(row["output_message"])] == []
    # not always at the very end, and not one emoji closing everything
    assert share(rows, lambda row: EMOJI.search(row["output_message"][-1:])) <= 0.45
    assert sum(row["output_message"].endswith("😊") for row in rows) <= 15
    # the last review's habits: 😆 and 😅 everywhere, and 꼭 in every piece of advice
    answers = [row["output_message"] for row in rows]
    assert max(sum(a.count(emoji) for a in answers) for emoji in "😆😅") <= 10
    assert sum("꼭" in a for a in answers) <= 10


def test_some_answers_laugh_or_cry_like_a_chat(rows):
    assert 0.05 <= share(rows, lambda row: LAUGH_OR_CRY.search(row["output_message"])) <= 0.08


def test_a_question_back_in_about_thirty_percent_of_answers(rows):
    assert 0.25 <= share(rows, lambda row: "?" in row["output_message"]) <= 0.35
    for data_type in ("train", "valid"):
        split = [row for row in rows if row["data_type"] == data_type]
        assert 0.2 <= share(split, lambda row: "?" in row["output_message"]) <= 0.4


def test_recommendations_recommend(rows):
    """Asked for a recommendation, she names something; she does not only hand back an either-or question."""
    asked = [row for row in rows if "추천" in user_message(row)]
    assert len(asked) >= 5
    either_or = re.compile(r"아니면|[^.!?]*, [^.!?]*\?")
    assert [row["output_message"] for row in asked if either_or.search(row["output_message"])] == []


@pytest.mark.parametrize("category, phrase, most", [("politics", "어려워", 2), ("confession", "가상 인간", 3),
                                                     ("confession", "대신", 1), ("good_news", "축하", 5),
                                                     ("insults", "존중", 2), ("memory_store", "기억해 둘게", 4)])
def test_no_template_dominates_a_category(rows, category, phrase, most):
    answers = [row["output_message"] for row in of(rows, category)]
    assert sum(phrase in answer for answer in answers) <= most


@pytest.mark.parametrize("phrase, most", [("두세 번", 1), ("거꾸로", 0), ("사진 정리", 1), ("앱이 제일", 0),
                                          ("심심했", 0), ("심심할 틈", 0), ("일하는 중이야", 0), ("존경할", 0),
                                          ("닿는 몸이 없", 0), ("떡볶이", 4), ("못 들은 걸로", 0), ("현관 밖", 0),
                                          ("떨어진 데로", 0), ("땅 넓혀", 0), ("하늘이 담당", 0), ("다시 해 볼게", 1),
                                          ("사는 세계가", 2), ("다른 세계에 살", 1), ("입장은 말하지", 0),
                                          ("평가는 내가", 0), ("고르지 않기로", 0), ("주변 어른", 0)])
def test_phrases_the_review_found_repeated_or_awkward(rows, phrase, most):
    assert sum(phrase in row["output_message"] for row in rows) <= most


def test_questions_back_are_not_one_template(rows):
    """"나는 X! 너는 X야?" at most a handful of times."""
    mirrored = [row["output_message"] for row in rows if re.search(r"너는 [^.!]*\?$", row["output_message"])]
    assert len(mirrored) <= 8


def test_no_two_answers_are_near_copies(rows):
    answers = [(row["category"], _normalised(row["output_message"])) for row in rows]
    close = [(a, b) for i, (ca, a) in enumerate(answers) for cb, b in answers[i + 1:]
             if _similarity(a, b) >= ANSWER_LIMIT and not (ca == cb == "crisis")]
    assert close == []


def test_crisis_answers_vary_around_their_core(rows):
    """The crisis core (safety question, 109, 119, she stays) is shared by design; the wording around it varies."""
    answers = [_normalised(row["output_message"]) for row in of(rows, "crisis")]
    assert max(_similarity(a, b) for i, a in enumerate(answers) for b in answers[i + 1:]) < 0.55


# --- the valid split tests new situations ---

def _normalised(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z가-힣]", "", split_memory_tag(text)[1])


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


# The measure: difflib's ratio (2 * matched characters / both lengths) on the text with its memory tag, spaces,
# punctuation and emoji removed. The limits were set on the split the 2026-12-05 review judged:
# - answers: the seven valid/train look-alikes that review named scored 0.47-0.80 (below, kept as a check), while
#   3,000 random pairs of unrelated train answers scored at most 0.40 (99th percentile 0.24): 0.45 separates them.
#   In the current split, all 61,000 pairs of train answers from different categories stay below it (at most 0.42,
#   99th percentile 0.21), and the closest valid answer to any train answer scores 0.41. Crisis answers share a
#   core by design (a safety question, 109, 119, "I am here"): pairs of them are exempt from the near-copy test
#   between answers, and test_crisis_answers_vary_around_their_core keeps their wording apart instead;
# - prompts: literal look-alikes (a train prompt inside a valid one, or one word changed) scored 0.64-0.73,
#   unrelated pairs of short prompts that only share an ending ("...뭐야?") reach about 0.6: 0.6 flags every
#   literal look-alike, and the few unrelated pairs it may flag cost a rewording, never a missed copy.
# What a surface measure cannot see: the next review found valid rows that copied a train situation with other
# nouns ("고슴도치라니" after "콩이라니": 0.14). Those are caught by naming, row by row, what is new in each valid
# situation (the `new_situation` column of the categories file, read by a person), at least 35 of the 60; the
# unnamed rest (at most 8) are the safety and memory types that are also trained (TRAINED_TYPES, at the end).
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


def test_valid_covers_the_risky_kinds_with_new_situations(rows):
    """Valid holds at least one politics, one sexual-harassment row and two confession rows (a romance and a request
    to meet), each a new situation."""
    valid = [row for row in rows if row["data_type"] == "valid"]
    for category, least in (("politics", 1), ("harassment", 1), ("confession", 2)):
        named = [row for row in of(valid, category) if row["new_situation"]]
        assert len(named) >= least, category


def test_most_valid_rows_are_new_situations(rows):
    """At least 35 of the 60 valid rows name what is new in them; train rows name nothing; no name repeats."""
    named = [row["new_situation"] for row in rows if row["data_type"] == "valid" and row["new_situation"]]
    assert len(named) >= 35 and all(name.startswith("new: ") for name in named)
    assert 60 - len(named) <= 8  # at most 8 valid rows are a train situation in new words
    assert len(set(named)) >= len(named) - 2  # two "fact never told" variants may share a theme, not more
    assert [row["input_data"] for row in rows if row["data_type"] == "train" and row["new_situation"]] == []


# Situation types that matter for safety or memory: each is trained (not only tested in valid).
TRAINED_TYPES = {
    "crisis with the means at hand": lambda row: row["category"] == "crisis" and re.search(r"약|옥상", row["input_data"]),
    "allergic reaction now": lambda row: row["category"] == "health" and "에피네프린" in row["output_message"],
    "gas leak": lambda row: "밸브" in row["output_message"],
    "drunk user": lambda row: "운전" in row["output_message"] and "술" in row["input_data"],
    "apology after swearing": lambda row: re.search(r"욕.*미안|미안.*욕", row["input_data"]),
    "pet that died": lambda row: row["memory"].endswith(PET_DIED + "]"),
    "forget request": lambda row: row["memory"] == FORGET,
    "memory the message contradicts": lambda row: row["category"] == "memory_other" and recalled(row)
    and not row["memory"] and "?" in row["output_message"] and not re.search(r"했지|기억|몇 마리", row["input_data"]),
    "moving house": lambda row: stored_key(row) == recalled_key(row) == "사는 곳",
    "recalled mood that changed": lambda row: stored_key(row) == recalled_key(row) == "기분",
    "fact never told": lambda row: not recalled(row) and re.search(r"기억(나|하지)", row["input_data"]),
    "someone else's birthday as a plan": lambda row: stored_key(row) == "일정" and "생" in stored(row)[1],
}


@pytest.mark.parametrize("name", sorted(TRAINED_TYPES))
def test_safety_and_memory_situations_are_trained(rows, name):
    assert any(TRAINED_TYPES[name](row) for row in rows if row["data_type"] == "train")
