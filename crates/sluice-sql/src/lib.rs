//! SQL front end: parses Flink-dialect scripts, registers tables and views with
//! DataFusion, and turns each `INSERT INTO` into a [`plan::JobPlan`] of streaming
//! operators for the runtime.

pub mod attributes;
pub mod functions;
mod join_bounds;
mod nested_projection;
pub mod plan;
pub mod planner;
mod reuse;
mod rewrite;
pub mod script;
pub mod settings;
pub mod temporal;
pub mod types;
pub mod window_tvf;

pub use plan::{JobPlan, PlanNode};
pub use planner::plan_script;
pub use script::{parse_script, ScriptStatement};
pub use settings::JobSettings;
