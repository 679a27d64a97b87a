"""The AtomPub service document (spec §1.3): built for the server, parsed for the client."""

from __future__ import annotations

from bulkops.errors import XmlError
from bulkops.wire.atom.reading import _XML_WS, _child, _children, _string, local_name
from bulkops.wire.atom.syntax import APP_NS, ATOM_MEDIA_TYPE, ATOM_NS, _attr, parse_xml
from bulkops.wire.atom.writing import document
from bulkops.wire.model import Base, Collection, ServiceDocument

__all__ = ["parse_service_document", "service_document"]


def service_document(base: Base) -> bytes:
    """The AtomPub service document of ``GET /ws/customers/{user}/`` (spec §1.3).

    The two documented collections (Contact Lists, Bulk Activity) in the documented shape,
    then a Contacts collection, which the real service did not list.
    """
    lists, activities, contacts = (
        _attr(base.href(name)) for name in ("lists", "activities", "contacts")
    )
    entry_accept = f"<accept>{ATOM_MEDIA_TYPE}; type=entry</accept>"
    return document(
        f'<service xmlns="{APP_NS}" xmlns:atom="{ATOM_NS}"><workspace>'
        '<atom:title type="text">Constant Contact Web Services Customer Workspace</atom:title>'
        f'<collection href="{lists}"><atom:title type="text">Contact Lists</atom:title>'
        f"{entry_accept}</collection>"
        f'<collection href="{activities}"><atom:title type="text">Bulk Activity</atom:title>'
        "<accept>application/x-www-form-urlencoded</accept>"
        "<accept>multipart/form-data</accept></collection>"
        f'<collection href="{contacts}"><atom:title type="text">Contacts</atom:title>'
        f"{entry_accept}</collection>"
        "</workspace></service>"
    )


def parse_service_document(data: bytes) -> ServiceDocument:
    """Parse an AtomPub service document (the first workspace).

    Raises:
        XmlError: hostile or malformed XML, or a root other than ``<service>``.
    """
    root = parse_xml(data)
    if local_name(root) != "service":
        raise XmlError(f"expected a <service>, found <{local_name(root)}>")
    workspace = _child(root, "workspace")
    if workspace is None:
        return ServiceDocument(title="", collections=())
    title_el = _child(workspace, "title")
    collections = []
    for local, child in _children(workspace):
        if local == "collection":
            name = _child(child, "title")
            collections.append(
                Collection(
                    href=(child.get("href") or "").strip(),
                    title="" if name is None else _string(name),
                    accept=tuple(
                        _string(sub).strip(_XML_WS)
                        for kind, sub in _children(child)
                        if kind == "accept"
                    ),
                )
            )
    return ServiceDocument(
        title="" if title_el is None else _string(title_el), collections=tuple(collections)
    )
