//! Inaudible audio watermark (embed and detect, no I/O) and C2PA provenance signing.
