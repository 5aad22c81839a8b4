//! The model graph: operators in topological order.

use super::op::{Op, Shape};
use serde::{Deserialize, Serialize};

/// Largest number of elements of any per-sample activation or parameter tensor.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// One operator application. `inputs` are indices of earlier nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<usize>,
}

/// A graph whose node 0 is the `Input` and whose last node is the output
/// (logits). Nodes are stored in execution order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Checks structure and infers every node's output shape.
    pub fn shapes(&self) -> Result<Vec<Shape>, String> {
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        match self.nodes.first() {
            Some(Node {
                op: Op::Input { .. },
                ..
            }) => {}
            _ => {
                return Err(format!(
                    "graph '{}' must start with an Input node",
                    self.name
                ));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 && matches!(node.op, Op::Input { .. }) {
                return Err(format!("node '{}': only node 0 may be an Input", node.name));
            }
            let mut ins = Vec::with_capacity(node.inputs.len());
            for &j in &node.inputs {
                if j >= i {
                    return Err(format!(
                        "node '{}' reads node {j}, which does not come before it",
                        node.name
                    ));
                }
                ins.push(&shapes[j]);
            }
            let s = node
                .op
                .output_shape(&ins)
                .map_err(|e| format!("node '{}': {e}", node.name))?;
            // Sizes may come from untrusted files: bound every tensor so
            // later arithmetic cannot overflow.
            let too_big = |dims: &[usize]| {
                dims.iter()
                    .try_fold(1usize, |a, &b| a.checked_mul(b))
                    .is_none_or(|n| n > MAX_ELEMENTS)
            };
            if too_big(&s) || node.op.param_specs().iter().any(|p| too_big(&p.shape)) {
                return Err(format!(
                    "node '{}': tensor sizes exceed {MAX_ELEMENTS} elements",
                    node.name
                ));
            }
            shapes.push(s);
        }
        let out = shapes.last().cloned().unwrap_or_default();
        if out.len() != 1 {
            return Err(format!(
                "graph '{}' must end in a [classes] vector, ends in {:?}",
                self.name, out
            ));
        }
        Ok(shapes)
    }

    /// Per-sample input shape `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        match self.nodes.first().map(|n| &n.op) {
            Some(Op::Input {
                channels,
                height,
                width,
            }) => [*channels, *height, *width],
            _ => [0, 0, 0],
        }
    }

    /// Number of output classes.
    pub fn classes(&self) -> usize {
        self.shapes()
            .ok()
            .and_then(|s| s.last().and_then(|v| v.first().copied()))
            .unwrap_or(0)
    }

    /// Multiply-accumulates per sample (conv + linear).
    pub fn macs(&self) -> Result<u64, String> {
        let shapes = self.shapes()?;
        Ok(self
            .nodes
            .iter()
            .zip(&shapes)
            .map(|(n, s)| n.op.macs(s))
            .fold(0u64, u64::saturating_add))
    }

    /// For each node, how many later nodes read it (the output counts as read).
    pub fn consumers(&self) -> Vec<usize> {
        let mut c = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for &j in &n.inputs {
                c[j] += 1;
            }
        }
        if let Some(last) = c.last_mut() {
            *last += 1;
        }
        c
    }
}
