//! The compiler: lowering a card to packed per-layer formats, a static
//! memory plan, C code generation and per-target builds (issue: the
//! compiler). Not built yet.
