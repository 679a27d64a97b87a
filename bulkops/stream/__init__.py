"""Pure incremental decoders and the chunker: fed bytes, they return rows and chunks.

Every decoder follows one protocol: ``decode(data: bytes) -> list[...]`` for each piece of
input as it arrives, then ``flush() -> list[...]`` once at the end. No IO, no clock.
"""
