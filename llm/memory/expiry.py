"""When a memory stops being true: the expiry table of docs/dataset.md, from the key, the value and when it was stored.

A mood or the weather holds for the day it was told; a plan until it has happened; a goal for 90 days; everything
else until the user says otherwise (a new value for the key replaces the old one). Expiry is computed from what each memory
already holds, so memories stored before this rule existed follow it too.
"""

import calendar
import re
from datetime import date, datetime, time, timedelta

SAME_DAY_KEYS = frozenset({"기분", "날씨"})  # until the end of the day they were stored
# A plan holds until the day after its date; without a date, this many days after it was stored.
UNDATED_PLAN_DAYS = {"일정": 7, "시험 일정": 30, "여행 계획": 60}
# Kept this many days after it was stored, dated or not.
KEPT_DAYS = {"목표": 90}

# "12월 10일", "6월 말", "10월" (a month alone) in a value; bounded quantifiers only, so linear in the value.
_DATE = re.compile(r"(?<![0-9])([0-9]{1,2}) ?월(?: ?([0-9]{1,2}) ?일| ?(말))?")


def _last_day(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def value_date(value: str, stored_on: date) -> date | None:
    """The last day a plan's value points at: its date, or the last day of its month ("M월 말", "M월"), in the
    first year that puts it on or after the day it was stored (a date has no year); None when it names no valid
    date."""
    found = _DATE.search(value)
    if found is None or not 1 <= int(found[1]) <= 12:
        return None
    month, day = int(found[1]), found[2]
    for year in range(stored_on.year, stored_on.year + 5):  # 2월 29일 waits for a leap year
        if day is None:
            candidate = _last_day(year, month)
        elif 1 <= int(day) <= calendar.monthrange(year, month)[1]:
            candidate = date(year, month, int(day))
        else:
            continue  # 2월 29일 outside a leap year; 4월 31일 in none
        if candidate >= stored_on:
            return candidate
    return None


def expires_at(key: str, value: str, stored: datetime) -> datetime | None:
    """The moment a memory expires (in the stored time's zone), or None when it does not."""
    def midnight_after(day: date) -> datetime:
        return datetime.combine(day + timedelta(days=1), time(), tzinfo=stored.tzinfo)

    if key in SAME_DAY_KEYS:
        return midnight_after(stored.date())
    if key in UNDATED_PLAN_DAYS:
        last_day = value_date(value, stored.date())
        return stored + timedelta(days=UNDATED_PLAN_DAYS[key]) if last_day is None else midnight_after(last_day)
    if key in KEPT_DAYS:
        return stored + timedelta(days=KEPT_DAYS[key])
    return None


def is_expired(key: str, value: str, stored: datetime | None, now: datetime) -> bool:
    """Whether a memory no longer holds at `now`; one of an expiring key with an unknown time (a hand edit) does
    not either, since nothing says it is still true."""
    if stored is None:
        return key in SAME_DAY_KEYS or key in UNDATED_PLAN_DAYS or key in KEPT_DAYS
    ends = expires_at(key, value, stored)
    return ends is not None and now >= ends
