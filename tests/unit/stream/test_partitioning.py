"""Our partitioner must agree with Kafka's default on every key."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from stream.partitioning import murmur2, partition_for

pytestmark = pytest.mark.unit


@given(st.binary(max_size=300))
def test_murmur2_matches_the_reference(key: bytes) -> None:
    assert murmur2(key) == reference(key)


@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_partition_matches_aiokafka(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, all_partitions,
                                                                   all_partitions)


def test_known_java_values() -> None:
    # From the Java client's UtilsTest.testMurmur2.
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == (-985981536) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == (-1486304829) & 0xFFFFFFFF
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == (
        -58897971) & 0xFFFFFFFF
