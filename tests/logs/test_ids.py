"""Request ids: unique and in the order they were made, however fast the gateway makes them."""

import os
import sys
import threading

from logs.ids import made_at, uuid7


def test_ids_made_in_a_row_are_distinct_and_sort_by_time():
    made = [uuid7() for _ in range(5_000)]  # a dozen refills of the random bytes
    assert len(set(made)) == len(made)
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in made)
    times = [made_at(i) for i in made]
    assert times == sorted(times)
    # Sorting the ids sorts them by the time they were made: what the log's index relies on.
    assert [made_at(i) for i in sorted(made)] == times


def test_threads_never_share_random_bits():
    made = {}

    def make(name):
        made[name] = [uuid7().int & ((1 << 62) - 1) for _ in range(2_000)]

    threads = [threading.Thread(target=make, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns in the middle of making an id
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    bits = [b for ids in made.values() for b in ids]
    assert len(set(bits)) == len(bits) == 8_000


def test_a_forked_process_does_not_repeat_its_parents_ids():
    uuid7()  # the parent's pool of random bytes is filled before the fork
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(write, uuid7().bytes)
        os._exit(0)
    os.close(write)
    in_child = os.read(read, 16)
    os.close(read)
    os.waitpid(child, 0)
    assert in_child[6:] != uuid7().bytes[6:]
