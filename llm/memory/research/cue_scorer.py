"""The OLD memory-relevance scorer (hand-written cue lists per key), kept only as the evaluation's baseline.

The chat uses llm/memory/offline_scorer.py or encoder_scorer.py; this module is the chat's scorer as it was
before them, unchanged apart from this docstring and the Scorer wrapper at the end, so that
evaluate_retrieval.py can report it beside them (its figures: docs/chat.md). Its keys are the dataset's old ones
(내일 일정, 오늘 날씨). Its method: each of the 16 keys has a hand-written list of cue stems (날씨: 우산, 더워,
미세먼지, ...); the cues found in the message give a distribution over keys, compared with the memory's key by the
labelling rule (same key 1, keys sharing a word 0.5, else 0). The memory's value and the words of keys outside
the lists are matched by character bigram containment. Its patterns are literal cues joined by optional spaces
behind a fixed look-behind: linear in the message.
"""

import re
import unicodedata

from llm.common.tags import parse_memory_tag
from llm.memory.relevance import Scorer

# A stored memory is prepended to the prompt only when its score reaches this (0.5 = "keys share a word").
RELEVANCE_THRESHOLD = 0.65

# Cue stems per memory key of the dataset, space separated; "_" stands for an optional space ("비_와").
# Cues of one or two syllables must start a word ("비가" does not fire inside "준비가"); longer ones match
# anywhere. "~" marks a weak cue (half weight): words that often come along with another topic, such as the
# feelings in "집 근처라 행복해". After "|" come modifiers ("좋아", "싫", "계획"): they count only for a key
# that already has half a cue's worth of evidence, so "출근하기 싫다" is about work, not about disliked food. A cue listed
# under several keys counts as evidence split between them.
TOPIC_CUES: dict[str, str] = {
    "오늘 날씨": "날씨 일기예보 예보 기온 최고기온 최저기온 체감 기상 비가 비_와 비_오 비_온 비_내 빗길 빗소리 "
                "빗방울 소나기 장마 호우 폭우 우산 우비 장화 천둥 번개 맑 흐려 흐리 흐린 흐림 구름 우중충 화창 "
                "쨍쨍 햇볕 햇빛 햇살 더워 더운 덥 폭염 무더 후덥 찜통 습해 습하 습도 끈적 열대야 에어컨 선풍기 "
                "반팔 선크림 자외선 양산 추워 추운 춥 쌀쌀 영하 한파 꽁꽁 얼어 얼었 빙판 패딩 롱패딩 장갑 핫팩 "
                "입김 눈이_와 눈_와 눈이_오 눈_오 눈이_내 눈_내 함박눈 첫눈 눈사람 폭설 미세먼지 초미세먼지 황사 "
                "공기 뿌옇 바람이 바람_불 강풍 태풍 안개 서리 일교차 환절기 ~땀 ~마스크",
    "내일 일정": "내일 모레 내일모레 스케줄 약속 면접 미팅 회의 출장 병원 치과 진료 검진 결혼식 졸업식 입학식 "
                "장례식 돌잔치 상견례 알람 발표 | 일정",
    "주말 계획": "주말 토요일 일요일 토욜 일욜 금요일_밤 불금 휴일 연휴 공휴일 쉬는_날 놀러 나들이 늦잠 캠핑 텐트 "
                "글램핑 피크닉 소풍 드라이브 본가 | 계획",
    "시험 일정": "시험 중간고사 기말 모의고사 수능 토익 토플 텝스 오픽 자격증 필기 실기 면허 도로주행 공부 "
                "벼락치기 성적 점수 문제집 기출 오답 합격 불합격 리스닝 단어 외우 암기 범위 수험 독서실 스터디 "
                "~도서관 | 일정",
    "좋아하는 음식": "음식 맛있 맛집 배고 메뉴 점심 저녁 아침밥 야식 간식 디저트 배달 외식 요리 ~먹 떡볶이 라볶이 "
                  "초밥 연어 마라탕 마라샹궈 치킨 치맥 피자 파스타 김치찌개 된장찌개 찌개 라면 짜장면 짬뽕 "
                  "탕수육 삼겹살 고기 소고기 갈비 햄버거 족발 보쌈 국밥 냉면 비빔밥 김밥 돈가스 카레 샐러드 빵 "
                  "아이스크림 커피 라떼 순대 곱창 매운 매콤 달달 | 좋아 최애 최고 당겨 땡겨 땡기 당기 사랑",
    "싫어하는 음식": "음식 반찬 편식 알레르기 비려 비린 물컹 느끼 식감 ~먹 오이 가지 고수 당근 민트초코 민초 굴 "
                  "피망 버섯 양파 파프리카 생강 | 못_먹 안_먹 싫 별로 빼 골라 최악 역겨 냄새",
    "반려동물": "반려 강아지 멍멍 댕댕 멍뭉 고양이 냥이 집사 햄스터 햄찌 앵무새 거북이 토끼 물고기 금붕어 열대어 "
              "수조 어항 새장 케이지 사료 츄르 산책 동물병원 예방접종 중성화 털 발톱 미용 배변 모래 펫 분양 입양 "
              "짖 꼬리 우다다 그루밍 골골",
    "취미": "취미 여가 시간_날_때 쉴_때 낙이 뜨개 목도리 털실 퍼즐 레고 보드게임 할리갈리 게임 그림 그리 웹툰 "
           "드로잉 스케치 색칠 사진 카메라 렌즈 필름 출사 독서 책 읽 소설 만화 피아노 악보 기타 악기 연주 "
           "우쿨렐레 바이올린 낚시 베이킹 공예 캘리그라피 다이어리 꾸미 영화 드라마 넷플릭스 애니 수집 식물 "
           "| 좋아 연습 빠졌 재밌",
    "전공": "전공 학과 과목 전과 복수전공 부전공 수업 강의 교수 과제 팀플 레포트 리포트 논문 학점 학기 수강 실습 "
           "동기 선배 후배 대학 캠퍼스 강의실 휴학 복학 졸업 경영 경제 회계 재무 마케팅 컴퓨터 컴공 코딩 "
           "프로그래밍 파이썬 알고리즘 자료구조 공학 기계 전자 열역학 물리 화학 생물 수학 통계 심리 간호 의학 "
           "약학 법학 국문 영문 문학 철학 원론 개론",
    "직업": "직업 일하 직장 회사 출근 퇴근 야근 특근 회식 상사 팀장 부장 과장 대리 사장 동료 월급 연봉 이직 취업 "
           "취직 입사 퇴사 알바 아르바이트 업무 근무 교대 사무실 손님 고객 클라이언트 환자 보호자 배포 서버 코드 "
           "버그 코딩 보고서 결재 선생님 학부모 우리_반 교실 직원 사원 인턴 프리랜서 마감 야간 시안",
    "좋아하는 가수": "가수 노래 음악 앨범 신곡 콘서트 공연 팬 팬미팅 팬싸 덕질 아이돌 컴백 뮤비 음방 음원 라이브 "
                  "플레이리스트 밴드 포카 굿즈 티켓팅 응원봉 직캠 스트리밍 아이유 뉴진스 아이브 데이식스 성시경 "
                  "잔나비 방탄 bts 블랙핑크 세븐틴 에스파 르세라핌 | 좋아 최애 듣 들으 들었",
    "좋아하는 운동": "운동 헬스 pt 피티 스쿼트 데드리프트 벤치 근력 유산소 홈트 스트레칭 요가 필라테스 수영 자유형 "
                  "평영 접영 배영 테니스 라켓 서브 배드민턴 탁구 축구 풋살 농구 야구 배구 골프 볼링 클라이밍 암벽 "
                  "볼더링 러닝 달리기 조깅 마라톤 뛰었 뛰 자전거 라이딩 복싱 주짓수 태권도 스키 스노보드 등산 레슨 "
                  "경기 근육 매트 ~땀 | 좋아 연습",
    "사는 곳": "사는_곳 사는_데 살아 살고 동네 이사 이삿짐 집_앞 집_근처 자취 원룸 오피스텔 아파트 빌라 월세 전세 "
              "집주인 이웃 옆집 윗집 아랫집 층간소음 지하철역 정류장 서울 부산 해운대 대전 대구 광주 인천 수원 "
              "제주 송도 망원 강남 홍대 성수 분당 일산 판교 | 집",
    "생일": "생일 생신 케이크 미역국 선물 파티 축하 태어난 태어났 한_살 촛불 초_불 서프라이즈",
    "기분": "기분 우울 멘붕 꿀꿀 울적 싱숭생숭 심란 허전 ~슬퍼 ~슬프 ~눈물 ~울었 ~울고 ~행복 ~신나 ~신난 ~기뻐 "
           "~기쁘 ~즐거 ~짜증 ~화나 ~화가 ~열받 ~빡치 ~속상 ~서운 ~힘들 ~지쳐 ~지친 ~피곤 ~졸려 ~졸리 ~외로 ~설레 "
           "~두근 ~불안 ~초조 ~걱정 ~긴장 ~떨려 ~무서 ~스트레스 ~답답 ~뿌듯 ~한숨 ~최악 ~날아갈",
    "여행 계획": "여행 비행기 항공 항공권 공항 여권 환전 엔화 숙소 호텔 리조트 게스트하우스 에어비앤비 캐리어 짐_싸 "
               "관광 투어 해외 휴가 배낭 패키지 렌터카 ktx 제주 오사카 도쿄 후쿠오카 일본 유럽 파리 런던 다낭 "
               "베트남 방콕 태국 괌 하와이 강릉 여수 경주 속초 전주 | 계획 가방",
}

_NOT_WORD_START = r"(?<![0-9a-z가-힣])"
_PARTICLE_OR_END = r"(?:이|가|은|는|을|를|도|만|에|의|와|과|랑|로|이랑|에서|처럼)?(?![0-9a-z가-힣])"
SHARPNESS = 2.0  # evidence ** SHARPNESS before normalising: the clearly dominant topic wins mixed messages


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower()


def _cue_pattern(cue: str) -> re.Pattern:
    body = r"\s*".join(re.escape(part) for part in cue.split("_"))
    return re.compile((_NOT_WORD_START if len(cue.replace("_", "")) <= 2 else "") + body)


def _compile(part: int) -> list[tuple[re.Pattern, float, list[str]]]:
    """(pattern, weight, keys listing it) for the main cues (part 0) or the modifiers (part 1)."""
    keys_of: dict[str, list[str]] = {}
    for key, cues in TOPIC_CUES.items():
        for cue in cues.partition("|")[2 * part].split():
            keys_of.setdefault(cue, []).append(key)
    return [(_cue_pattern(cue.lstrip("~")), 0.5 if cue.startswith("~") else 1.0, keys)
            for cue, keys in keys_of.items()]


_MAIN_CUES, _MODIFIER_CUES = _compile(0), _compile(1)


def _add_evidence(evidence: dict[str, float], text: str, cues, allowed) -> None:
    for pattern, weight, keys in cues:
        keys = [key for key in keys if allowed(key)]
        if keys and pattern.search(text):
            for key in keys:
                evidence[key] = evidence.get(key, 0.0) + weight / len(keys)


def topic_evidence(message: str) -> dict[str, float]:
    """Evidence per known key: the weighted cues found in the message, each split between the keys listing it."""
    text = _normalize(message)
    evidence: dict[str, float] = {}
    _add_evidence(evidence, text, _MAIN_CUES, lambda key: True)
    found = {key for key, e in evidence.items() if e >= 0.5}  # a weak cue alone does not let modifiers count
    _add_evidence(evidence, text, _MODIFIER_CUES, lambda key: key in found)
    return evidence


def key_similarity(key_a: str, key_b: str) -> float:
    """The labelling rule between two keys: 1 same key, 0.5 when they share a word, else 0."""
    if key_a == key_b:
        return 1.0
    return 0.5 if set(key_a.split()) & set(key_b.split()) else 0.0


def _word_match(word: str, text: str) -> float:
    """Share of a word's character bigrams found in the text; a one-syllable word must stand alone."""
    word = _normalize(word)
    if len(word) < 2:  # "비" matches "비가" or "비 와", not "비싸다"
        return 1.0 if re.search(_NOT_WORD_START + re.escape(word) + _PARTICLE_OR_END, text) else 0.0
    bigrams = {word[i:i + 2] for i in range(len(word) - 1)}
    return sum(bigram in text for bigram in bigrams) / len(bigrams)


def value_match(value: str, message: str) -> float:
    """How clearly the message mentions the memory's value: the best-matched word of the value."""
    text = _normalize(message)
    return max((_word_match(word, text) for word in value.split()), default=0.0)


def topic_score(key: str, message: str) -> float:
    """How much the message is about this key, from the cue evidence (any key, listed or not)."""
    evidence = topic_evidence(message)
    if not evidence:
        return 0.0
    weights = {k: e ** SHARPNESS for k, e in evidence.items()}
    total = sum(weights.values())
    return sum(w / total * key_similarity(k, key) for k, w in weights.items())


def relevance(tag: str, message: str) -> float:
    """Relevance in [0, 1] of a memory tag like "[내일 일정: 면접]" to a user message; 0 for a malformed tag."""
    parsed = parse_memory_tag(tag)
    if parsed is None or not message.strip():
        return 0.0
    key, value = parsed
    score = max(topic_score(key, message), value_match(value, message))
    if key not in TOPIC_CUES:  # a key the cue lists do not know: look for its own words in the message
        text = _normalize(message)
        score = max(score, sum(_word_match(word, text) for word in key.split()) / len(key.split()))
    return min(1.0, score)


def most_relevant(tags: list[str], message: str) -> tuple[str, float] | None:
    """The best tag for the message and its score if it reaches the threshold; ties go to the earlier tag."""
    best = max(((tag, relevance(tag, message)) for tag in tags), key=lambda pair: pair[1], default=None)
    if best is None or best[1] < RELEVANCE_THRESHOLD:
        return None
    return best


class CueScorer(Scorer):
    """The cue lists as a Scorer, for the side-by-side reports."""

    name = "lists"

    def __init__(self) -> None:
        super().__init__(RELEVANCE_THRESHOLD, "cue lists written by hand while relevance_pairs.csv rows 0:640 and "
                                              "retrieval_eval.csv rows 0:216 were written (frozen)")

    def score_memories(self, memories: list[tuple[str, str]], message: str) -> list[float]:
        return [relevance(f"[{key}: {value}]", message) for key, value in memories]
