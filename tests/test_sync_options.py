"""The sync's options: ``max_remove`` as a count or a percentage, checked early."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.engine.import_options import ImportOptions
from bulkops.engine.sync_report import SyncOptions, removal_limit
from bulkops.errors import ConfigError


@given(members=st.integers(0, 10**7), percent=st.integers(0, 100))
def test_a_percentage_is_of_the_list_rounded_down(members: int, percent: int) -> None:
    """``P%`` of M members allows ``floor(M * P / 100)`` removals."""
    assert removal_limit(f"{percent}%", members) == members * percent // 100


@given(count=st.integers(0, 10**9), members=st.integers(0, 10))
def test_a_count_is_a_count_whatever_the_list(count: int, members: int) -> None:
    """``N`` allows N removals."""
    assert removal_limit(str(count), members) == count


@pytest.mark.parametrize("spec", ["lots", "-1", "10%%", "101%", "2.5", ""])
def test_other_limits_are_refused_before_anything_is_sent(spec: str) -> None:
    """A limit that is neither is a usage error naming the setting."""
    with pytest.raises(ConfigError, match="max_remove"):
        SyncOptions(list="News", max_remove=spec)


def test_options_survive_the_journal() -> None:
    """``to_meta`` / ``from_meta`` give the same options (resume repeats them)."""
    options = SyncOptions(
        list="News", remove_missing=True, max_remove="5", full=True, send=ImportOptions(uploads=1)
    )
    assert SyncOptions.from_meta(options.to_meta()) == options


def test_a_list_must_be_named() -> None:
    """No list, no sync."""
    with pytest.raises(ConfigError, match="list"):
        SyncOptions(list=" ")
