"""The protocol vocabulary both halves share: pure, no IO, no clock.

``columns`` (contact fields, activity columns, row checks), ``activity`` (types, statuses,
the lifecycle table, form field names, limits), ``uris`` (the URL layout), ``forms`` (the
activity form codec: fields to urlencoded or multipart bodies and back) and ``atom`` (a
package: namespaces, hardened XML parsing, then entry and feed builders and parsers, one
module per resource family).
"""
