//! Sub-plan reuse: operators that compute the same thing from the same
//! inputs run once, and every reader gets their output (Flink's
//! `table.optimizer.reuse-sub-plan-enabled`, on by default there too). A
//! query that aggregates the same windows twice (Nexmark q5's two `HOP`
//! counts) then keeps one copy of that state and does the work once.

use std::collections::HashMap;

use crate::plan::{NodeId, PlanNode};

/// The setting that turns reuse off (`'false'`); Flink's name.
pub const REUSE_SUB_PLAN_SETTING: &str = "table.optimizer.reuse-sub-plan-enabled";

/// Merges every node into the first earlier node that has the same
/// signature (the same operator, parameters and, after merging, inputs), then
/// drops the nodes no sink reads any more. Nodes that call one of the
/// `volatile` functions are never merged. Returns the renumbered nodes
/// (inputs still before their readers) and sinks. A plan without duplicates
/// comes back unchanged.
pub fn reuse_identical_subplans(
    mut nodes: Vec<PlanNode>,
    sinks: Vec<NodeId>,
    volatile: &[String],
) -> (Vec<PlanNode>, Vec<NodeId>) {
    let mut same_as: Vec<NodeId> = Vec::with_capacity(nodes.len());
    let mut by_signature: HashMap<String, NodeId> = HashMap::new();
    for (id, node) in nodes.iter_mut().enumerate() {
        let inputs = node.inputs();
        let merged_inputs: Vec<NodeId> = inputs.iter().map(|input| same_as[*input]).collect();
        if merged_inputs != inputs {
            node.set_inputs(&merged_inputs);
        }
        let representative = match signature(node, volatile) {
            Some(signature) => *by_signature.entry(signature).or_insert(id),
            None => id,
        };
        same_as.push(representative);
    }
    if same_as.iter().enumerate().all(|(id, same)| id == *same) {
        return (nodes, sinks);
    }
    // Sinks are never merged, so they read the merged nodes; what only the
    // merged-away nodes read is dropped with them.
    let mut read = vec![false; nodes.len()];
    let mut pending = sinks.clone();
    while let Some(id) = pending.pop() {
        if !std::mem::replace(&mut read[id], true) {
            pending.extend(nodes[id].inputs());
        }
    }
    let mut renumbered = vec![0; nodes.len()];
    let mut kept = Vec::with_capacity(nodes.len());
    for (id, mut node) in nodes.into_iter().enumerate() {
        if !read[id] {
            continue;
        }
        let inputs: Vec<NodeId> = node.inputs().iter().map(|i| renumbered[*i]).collect();
        node.set_inputs(&inputs);
        renumbered[id] = kept.len();
        kept.push(node);
    }
    let sinks = sinks.iter().map(|sink| renumbered[*sink]).collect();
    (kept, sinks)
}

/// What makes two nodes interchangeable: their full description (operator,
/// expressions, schemas, input ids), with the names DataFusion makes up for
/// extracted struct fields numbered alike (they are referenced by position).
/// `None` for nodes never merged: sources (already one per table), sinks
/// (one per `INSERT`), and nodes calling a `volatile` function (two
/// `RAND()`s are two different streams).
fn signature(node: &PlanNode, volatile: &[String]) -> Option<String> {
    if matches!(node, PlanNode::Source { .. } | PlanNode::Sink { .. }) {
        return None;
    }
    // A function call is described as `ScalarFunctionExpr { fun: .., name: "random", .. }`.
    let described = format!("{node:?}");
    if volatile
        .iter()
        .any(|name| described.contains(&format!("name: {name:?}")))
    {
        return None;
    }
    Some(without_generated_numbers(&described))
}

/// Names DataFusion generates per query, numbered across the whole script.
const GENERATED_NAME_PREFIXES: [&str; 1] = ["__datafusion_extracted_"];

/// `text` with the number after each generated name prefix removed.
fn without_generated_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, prefix)) = GENERATED_NAME_PREFIXES
        .iter()
        .filter_map(|prefix| rest.find(prefix).map(|at| (at, prefix)))
        .min()
    {
        let end = at + prefix.len();
        out.push_str(&rest[..end]);
        rest = rest[end..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_lose_their_numbers_only() {
        assert_eq!(
            without_generated_numbers(
                "Column { name: \"__datafusion_extracted_12\", index: 3 }, x_7, __datafusion_extracted_1@0"
            ),
            "Column { name: \"__datafusion_extracted_\", index: 3 }, x_7, __datafusion_extracted_@0"
        );
    }
}
