//! The receivers this broker accepts messages for.

use sammen_model::Party;
use std::collections::{HashMap, HashSet};

/// Known receivers: by GLN, and SOR → GLN for messages addressed by SOR only.
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    glns: HashSet<String>,
    sor_to_gln: HashMap<String, String>,
}

impl Receivers {
    /// From `(gln, sor)` pairs.
    pub fn new<'a>(list: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        let mut r = Receivers::default();
        for (gln, sor) in list {
            r.glns.insert(gln.to_string());
            if let Some(sor) = sor {
                r.sor_to_gln.insert(sor.to_string(), gln.to_string());
            }
        }
        r
    }

    /// The GLN to route `p` to, when `p` is a known receiver.
    pub fn route(&self, p: &Party) -> Option<String> {
        match (&p.gln, &p.sor) {
            (Some(g), _) if self.glns.contains(g) => Some(g.clone()),
            (None, Some(s)) => self.sor_to_gln.get(s).cloned(),
            _ => None,
        }
    }

    /// True when `gln` is a receiver the broker serves.
    pub fn contains(&self, gln: &str) -> bool {
        self.glns.contains(gln)
    }

    /// Every GLN.
    pub fn glns(&self) -> impl Iterator<Item = &str> {
        self.glns.iter().map(String::as_str)
    }
}
