//! Robustness evaluation (RESEARCH.md §2, §4): the corruption table with
//! per-cell calibration and corruption errors against a baseline
//! ([`table`], [`suite`]), white-box attacks ([`attack`]), and the report
//! directory with its figures and pages ([`plot`], [`report`]).

pub mod attack;
pub mod plot;
pub mod report;
pub mod suite;
pub mod table;

pub use attack::{AttackSpec, attack_batch};
pub use suite::{RobustReport, SuiteConfig};
pub use table::CorruptionTable;
