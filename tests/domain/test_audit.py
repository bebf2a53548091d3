"""The audit chain (pure): canonical encoding, keyed hashes, and which link breaks how."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from keyplane.domain import audit
from keyplane.domain.audit import AuditEntry, Checkpoint, verify_chain

KEY = audit.chain_key(b"server-secret")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def chain(n: int, org: str = "org_1", start: Checkpoint | None = None) -> list[AuditEntry]:
    entries = []
    seq, prev = (0, audit.GENESIS) if start is None else (start.seq, start.hash)
    for i in range(n):
        seq += 1
        entry = AuditEntry(
            org_id=org,
            seq=seq,
            id=f"aud_{seq:026d}",
            occurred_at=T0 + timedelta(seconds=i),
            project_id="proj_1",
            actor_type="management_key",
            actor_id="mk_1",
            actor_name="ops",
            actor_ip="203.0.113.7",
            actor_user_agent="curl/8",
            request_id=None,
            action="key.updated",
            target_type="key",
            target_id=f"key_{i}",
            outcome="success",
            details={"changes": {"name": {"from": "a", "to": f"b{i}"}}, "ratio": 1.0},
            count=1,
            prev_hash=prev,
            hash="",
        )
        entry = dataclasses.replace(entry, hash=audit.entry_hash(KEY, entry))
        prev = entry.hash
        entries.append(entry)
    return entries


def head(entries: list[AuditEntry]) -> tuple[int, str]:
    return entries[-1].seq, entries[-1].hash


def test_an_untouched_chain_verifies() -> None:
    entries = chain(5)
    result = verify_chain(KEY, entries, head=head(entries))
    assert result.ok and result.checked == 5 and result.first_broken is None


def test_the_encoding_is_stable_across_a_json_round_trip() -> None:
    entry = chain(1)[0]
    # JSONB gives back an integral float as an int: the hash must not change.
    stored = dataclasses.replace(entry, details={"ratio": 1, "changes": entry.details["changes"]})
    assert audit.entry_hash(KEY, stored) == entry.hash


def test_the_hash_is_keyed() -> None:
    entry = chain(1)[0]
    assert audit.entry_hash(audit.chain_key(b"another secret"), entry) != entry.hash


def test_an_altered_entry_is_named() -> None:
    entries = chain(5)
    entries[2] = dataclasses.replace(entries[2], actor_name="someone else")
    broken = verify_chain(KEY, entries, head=head(entries)).first_broken
    assert broken is not None and (broken.seq, broken.reason) == (3, audit.ALTERED)


def test_a_removed_entry_is_named_by_the_gap() -> None:
    entries = chain(5)
    del entries[1]
    result = verify_chain(KEY, entries, head=head(entries))
    assert result.first_broken == audit.BrokenLink(3, entries[1].id, audit.REMOVED)
    assert result.checked == 1


def test_a_removed_entry_with_renumbered_followers_is_named() -> None:
    entries = chain(5)
    del entries[1]
    entries[1:] = [dataclasses.replace(e, seq=e.seq - 1) for e in entries[1:]]
    broken = verify_chain(KEY, entries).first_broken
    assert broken is not None and (broken.seq, broken.reason) == (2, audit.REMOVED)


def test_a_cut_tail_is_named_against_the_head() -> None:
    entries = chain(5)
    result = verify_chain(KEY, entries[:3], head=head(entries))
    assert result.first_broken == audit.BrokenLink(4, None, audit.REMOVED)


def test_an_inserted_entry_is_named() -> None:
    entries = chain(5)
    forged = dataclasses.replace(entries[2], id="aud_forged", hash="f" * 64)
    tampered = [*entries[:2], dataclasses.replace(forged, seq=3)]
    tampered += [dataclasses.replace(e, seq=e.seq + 1) for e in entries[2:]]
    broken = verify_chain(KEY, tampered, head=head(entries)).first_broken
    assert broken is not None and (broken.id, broken.reason) == ("aud_forged", audit.INSERTED)


def test_an_entry_appended_past_the_head_is_named_inserted() -> None:
    entries = chain(5)
    extra = chain(6)[5]
    tampered = [*entries, dataclasses.replace(extra, hash="0" * 64)]
    broken = verify_chain(KEY, tampered, head=head(entries)).first_broken
    assert broken is not None and (broken.seq, broken.reason) == (6, audit.INSERTED)


def test_two_swapped_entries_are_named_reordered() -> None:
    entries = chain(5)
    a, b = entries[1], entries[2]
    entries[1] = dataclasses.replace(b, seq=2)
    entries[2] = dataclasses.replace(a, seq=3)
    broken = verify_chain(KEY, entries, head=head(entries)).first_broken
    assert broken is not None and (broken.seq, broken.reason) == (2, audit.REORDERED)


def test_entries_out_of_seq_order_are_named_reordered() -> None:
    entries = chain(4)
    entries[1], entries[2] = entries[2], entries[1]
    broken = verify_chain(KEY, entries).first_broken
    assert broken is not None and broken.reason in (audit.REMOVED, audit.REORDERED)


def test_a_chain_verifies_from_its_checkpoint() -> None:
    entries = chain(6)
    checkpoint = Checkpoint(entries[2].seq, entries[2].hash)
    result = verify_chain(KEY, entries[3:], checkpoint=checkpoint, head=head(entries))
    assert result.ok and result.checked == 3 and result.checkpoint == checkpoint
    # Without the checkpoint, the remaining chain does not start at the beginning.
    assert not verify_chain(KEY, entries[3:]).ok


def test_an_empty_chain_verifies() -> None:
    result = verify_chain(KEY, [])
    assert result.ok and result.checked == 0


def test_derived_ids_are_stable_per_seed() -> None:
    from keyplane.domain import ids

    one = ids.derived_id("aud", 1_700_000_000_000, b"key_1|key.expired|t")
    assert one == ids.derived_id("aud", 1_700_000_000_000, b"key_1|key.expired|t")
    assert one != ids.derived_id("aud", 1_700_000_000_000, b"key_2|key.expired|t")
    assert ids.looks_like_id(one, "aud")
