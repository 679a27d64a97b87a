"""Atom/AtomPub for the CTCT v1 API, shared by the server and the client (spec §1.3, §3–11).

One module per concern; import each name from the module that holds it (this package
re-exports nothing). From the bottom up — each imports only those above it:

* :mod:`~bulkops.wire.atom.syntax` — namespaces, media types and limits; :func:`parse_xml`
  (untrusted bytes to an element tree, or :class:`~bulkops.errors.XmlError`); escaping;
  timestamps (:func:`format_time`, :func:`parse_time`).
* :mod:`~bulkops.wire.atom.writing` — the pieces every entry builder shares, and
  :func:`document`.
* :mod:`~bulkops.wire.atom.reading` — the pieces every record parser shares: tag → local
  name (:data:`LOCAL_NAMES`, :func:`local_name_of`), typed values, the Atom parts of an
  ``<entry>``, resource ids from URIs, :func:`links_of`, :func:`resolve_href`.
* One module per resource family, each with its builders (records → ``str`` fragments) and
  parsers (``<entry>`` elements and request documents → the records of
  :mod:`bulkops.wire.model`): :mod:`~bulkops.wire.atom.lists` (lists and members),
  :mod:`~bulkops.wire.atom.contacts`, :mod:`~bulkops.wire.atom.activities`,
  :mod:`~bulkops.wire.atom.campaigns` (and schedules), :mod:`~bulkops.wire.atom.events`
  (and the events service document), :mod:`~bulkops.wire.atom.email_addresses` (the
  account's settings), :mod:`~bulkops.wire.atom.service` (the service document).
* :mod:`~bulkops.wire.atom.feeds` — whole feeds: :func:`feed_head`/:func:`feed_tail` to
  stream one, :func:`record_from_entry` (any entry, by its payload), :func:`parse_feed`,
  :func:`parse_entry`.

A leading underscore marks a name only this package's modules share (tests may look).

Invariants, whatever the module:

* **Hostile input costs O(bytes), bounded** (:mod:`~bulkops.wire.atom.syntax`).
* **Record parsers run once per feed entry** and keep bounded per-process caches of what
  every entry repeats (:mod:`~bulkops.wire.atom.reading`).
* **Output is always well-formed**: every value goes through ``syntax._text`` or
  ``syntax._attr``.
* **Parsers are prefix- and namespace-agnostic**: elements are matched by local name, so
  ``atom:`` prefixes, a payload without the CTCT namespace (fixture ``list-entry.xml``) and
  the nested Atom links inside payloads all read the same. Element order never matters and
  unknown elements are ignored.
* **Round trip.** For every record ``r`` and view, ``*_from_entry(build(r))`` equals ``r``
  as that view carries it (with illegal characters stripped); tests/test_atom_roundtrip.py
  checks it with hypothesis.
* Timestamps are written as UTC with milliseconds and ``Z`` (``2009-11-20T20:41:19.243Z``).
"""
