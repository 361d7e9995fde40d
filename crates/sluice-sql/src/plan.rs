//! The streaming job plan: a forest of operator nodes, one tree per sink.

use std::fmt::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::connector::{SinkConnector, SourceConnector};

use crate::settings::JobSettings;

/// Index of a node in [`JobPlan::nodes`].
pub type NodeId = usize;

/// One streaming operator of the plan.
#[derive(Debug)]
pub enum PlanNode {
    /// Reads a table through its connector.
    Source {
        /// Table name.
        table: String,
        /// The configured connector.
        connector: Arc<dyn SourceConnector>,
        /// The `WATERMARK FOR` clause as written, carried for event-time operators.
        watermark: Option<String>,
    },
    /// Computes one output column per expression.
    Project {
        /// Input node.
        input: NodeId,
        /// Expressions over the input's columns.
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// Keeps rows where the predicate is true.
    Filter {
        /// Input node.
        input: NodeId,
        /// Boolean expression over the input's columns.
        predicate: Arc<dyn PhysicalExpr>,
    },
    /// Concatenates the streams of its inputs (`UNION ALL`).
    Union {
        /// Input nodes, all with the same column types.
        inputs: Vec<NodeId>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// Writes its input to a table's connector.
    Sink {
        /// Input node.
        input: NodeId,
        /// Table name.
        table: String,
        /// The configured connector.
        connector: Arc<dyn SinkConnector>,
    },
}

impl PlanNode {
    /// The nodes this node reads from.
    pub fn inputs(&self) -> Vec<NodeId> {
        match self {
            PlanNode::Source { .. } => vec![],
            PlanNode::Project { input, .. }
            | PlanNode::Filter { input, .. }
            | PlanNode::Sink { input, .. } => {
                vec![*input]
            }
            PlanNode::Union { inputs, .. } => inputs.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            PlanNode::Source {
                table,
                connector,
                watermark,
            } => {
                let mut text = format!("Source `{table}`: {}", connector.describe());
                if let Some(watermark) = watermark {
                    let _ = write!(text, " [watermark {watermark}]");
                }
                text
            }
            PlanNode::Project { exprs, schema, .. } => {
                let columns: Vec<String> = exprs
                    .iter()
                    .zip(schema.fields())
                    .map(|(expr, field)| {
                        let expr = expr.to_string();
                        if strip_index(&expr) == field.name() {
                            field.name().clone()
                        } else {
                            format!("{} AS {}", expr, field.name())
                        }
                    })
                    .collect();
                format!("Project: {}", columns.join(", "))
            }
            PlanNode::Filter { predicate, .. } => format!("Filter: {predicate}"),
            PlanNode::Union { inputs, .. } => format!("Union all ({} inputs)", inputs.len()),
            PlanNode::Sink {
                table, connector, ..
            } => format!("Sink `{table}`: {}", connector.describe()),
        }
    }
}

/// DataFusion prints column references as `name@index`.
fn strip_index(expr: &str) -> &str {
    match expr.rsplit_once('@') {
        Some((name, index)) if index.chars().all(|c| c.is_ascii_digit()) => name,
        _ => expr,
    }
}

/// A whole job: every `INSERT` of a script, planned together.
#[derive(Debug)]
pub struct JobPlan {
    /// Job-wide settings.
    pub settings: JobSettings,
    /// All nodes; inputs always come before the nodes that read them.
    pub nodes: Vec<PlanNode>,
    /// The sink nodes, one per `INSERT` (or bare `SELECT`).
    pub sinks: Vec<NodeId>,
}

impl JobPlan {
    /// Whether every source of the job is bounded (the job then ends by itself).
    pub fn is_bounded(&self) -> bool {
        self.nodes.iter().all(|node| match node {
            PlanNode::Source { connector, .. } => connector.is_bounded(),
            _ => true,
        })
    }

    /// A readable operator tree for `sluice run --explain`.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "Job '{}': parallelism {}, {} sink(s), {} input\n",
            self.settings.job_name,
            self.settings.parallelism,
            self.sinks.len(),
            if self.is_bounded() {
                "bounded"
            } else {
                "unbounded"
            }
        );
        for sink in &self.sinks {
            self.explain_node(*sink, 0, &mut out);
        }
        out
    }

    fn explain_node(&self, id: NodeId, depth: usize, out: &mut String) {
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}└─ ", "   ".repeat(depth - 1))
        };
        let _ = writeln!(out, "{indent}{}", self.nodes[id].describe());
        for input in self.nodes[id].inputs() {
            self.explain_node(input, depth + 1, out);
        }
    }
}
