//! The model IR: operators (one definition each), graphs, and the model
//! descriptions that build them.

pub mod graph;
pub mod models;
pub mod op;

pub use graph::{Graph, Node};
pub use op::{BatchNorm, Conv2d, Linear, Op, ParamKind, ParamSpec, Pool, Shape};
