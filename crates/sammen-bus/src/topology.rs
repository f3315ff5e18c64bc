//! Names and arguments of Sammen's exchanges and queues: one source for the code that declares them
//! and for `deploy/rabbitmq/definitions.json` (a test keeps the two equal).
//!
//! - `sammen.route` (topic): every message, routing key `<receiver-gln>.<family>.<event>`.
//! - `sammen.inbox.<gln>` (quorum): one per receiver, bound with `<gln>.#`, dead-letters to `sammen.dead`
//!   after `x-delivery-limit` returns (at-least-once dead-lettering, so a dead message is not lost either).
//! - `sammen.dead` (fanout) → queue `sammen.dead` (quorum): everything that could not be delivered.

use serde_json::{json, Map, Value};

/// Topic exchange every message is published to.
pub const ROUTE_EXCHANGE: &str = "sammen.route";
/// Its type.
pub const ROUTE_EXCHANGE_TYPE: &str = "topic";
/// Dead-letter exchange.
pub const DEAD_EXCHANGE: &str = "sammen.dead";
/// Its type: fanout, everything dead goes to one place.
pub const DEAD_EXCHANGE_TYPE: &str = "fanout";
/// Dead-letter queue.
pub const DEAD_QUEUE: &str = "sammen.dead";
/// Prefix of the per-receiver inbox queues.
pub const INBOX_PREFIX: &str = "sammen.inbox.";
/// Returns before a message is dead-lettered, unless configured otherwise.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

/// Queue argument: queue type.
pub const ARG_QUEUE_TYPE: &str = "x-queue-type";
/// Queue argument: returns before dead-lettering (quorum queues).
pub const ARG_DELIVERY_LIMIT: &str = "x-delivery-limit";
/// Queue argument: dead-letter exchange.
pub const ARG_DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
/// Queue argument: dead-letter strategy (at-least-once needs RabbitMQ ≥ 3.10).
pub const ARG_DEAD_LETTER_STRATEGY: &str = "x-dead-letter-strategy";
/// Queue argument: overflow behaviour (at-least-once dead-lettering requires reject-publish).
pub const ARG_OVERFLOW: &str = "x-overflow";
/// Quorum queue type value.
pub const QUEUE_TYPE_QUORUM: &str = "quorum";

/// A queue argument value (the subset Sammen uses), convertible to AMQP tables and to JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// A string.
    Str(&'static str),
    /// An owned string (exchange names may carry a test prefix).
    String(String),
    /// An integer.
    Int(i64),
}

impl ArgValue {
    fn to_json(&self) -> Value {
        match self {
            ArgValue::Str(s) => json!(s),
            ArgValue::String(s) => json!(s),
            ArgValue::Int(i) => json!(i),
        }
    }
}

/// The names and limits of one Sammen topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange messages are published to.
    pub route_exchange: String,
    /// Dead-letter exchange.
    pub dead_exchange: String,
    /// Dead-letter queue.
    pub dead_queue: String,
    /// Prefix of inbox queue names.
    pub inbox_prefix: String,
    /// Returns (nack with requeue) before a message is dead-lettered.
    pub delivery_limit: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            route_exchange: ROUTE_EXCHANGE.into(),
            dead_exchange: DEAD_EXCHANGE.into(),
            dead_queue: DEAD_QUEUE.into(),
            inbox_prefix: INBOX_PREFIX.into(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }
}

impl Topology {
    /// The same topology with every name prefixed by `ns.` — isolates tests and tenants on one broker.
    pub fn namespaced(ns: &str) -> Self {
        let d = Topology::default();
        Topology {
            route_exchange: format!("{ns}.{}", d.route_exchange),
            dead_exchange: format!("{ns}.{}", d.dead_exchange),
            dead_queue: format!("{ns}.{}", d.dead_queue),
            inbox_prefix: format!("{ns}.{}", d.inbox_prefix),
            delivery_limit: d.delivery_limit,
        }
    }

    /// Inbox queue of a receiver.
    pub fn inbox_queue(&self, gln: &str) -> String {
        format!("{}{gln}", self.inbox_prefix)
    }

    /// Binding key of a receiver's inbox.
    pub fn binding_key(gln: &str) -> String {
        format!("{gln}.#")
    }

    /// Arguments of every inbox queue.
    pub fn inbox_arguments(&self) -> Vec<(&'static str, ArgValue)> {
        vec![
            (ARG_QUEUE_TYPE, ArgValue::Str(QUEUE_TYPE_QUORUM)),
            (
                ARG_DELIVERY_LIMIT,
                ArgValue::Int(i64::from(self.delivery_limit)),
            ),
            (
                ARG_DEAD_LETTER_EXCHANGE,
                ArgValue::String(self.dead_exchange.clone()),
            ),
            (ARG_DEAD_LETTER_STRATEGY, ArgValue::Str("at-least-once")),
            (ARG_OVERFLOW, ArgValue::Str("reject-publish")),
        ]
    }

    /// Arguments of the dead-letter queue (no DLX of its own: nothing loops).
    pub fn dead_queue_arguments(&self) -> Vec<(&'static str, ArgValue)> {
        vec![(ARG_QUEUE_TYPE, ArgValue::Str(QUEUE_TYPE_QUORUM))]
    }

    /// RabbitMQ definitions (the format `rabbitmqctl import_definitions` and the management plugin
    /// load) for this topology with the given receivers, in vhost `/`.
    pub fn definitions(&self, receivers: &[&str]) -> Value {
        let args = |a: Vec<(&'static str, ArgValue)>| -> Value {
            Value::Object(
                a.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect::<Map<_, _>>(),
            )
        };
        let exchange = |name: &str, kind: &str| {
            json!({"name": name, "vhost": "/", "type": kind, "durable": true,
                   "auto_delete": false, "internal": false, "arguments": {}})
        };
        let queue = |name: String, a: Value| json!({"name": name, "vhost": "/", "durable": true, "auto_delete": false, "arguments": a});
        let binding = |src: &str, dst: String, key: String| {
            json!({"source": src, "vhost": "/", "destination": dst, "destination_type": "queue",
                   "routing_key": key, "arguments": {}})
        };
        let mut queues = vec![queue(
            self.dead_queue.clone(),
            args(self.dead_queue_arguments()),
        )];
        let mut bindings = vec![binding(
            &self.dead_exchange,
            self.dead_queue.clone(),
            String::new(),
        )];
        for gln in receivers {
            queues.push(queue(self.inbox_queue(gln), args(self.inbox_arguments())));
            bindings.push(binding(
                &self.route_exchange,
                self.inbox_queue(gln),
                Self::binding_key(gln),
            ));
        }
        // Receipts from subscribers (see `receipts`): declared here too, so a locked-down RabbitMQ
        // (subscribers without configure permission) still has it.
        queues.push(queue(
            crate::receipts::receipts_queue(self),
            Value::Object(
                crate::receipts::receipts_queue_arguments()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v)))
                    .collect::<Map<_, _>>(),
            ),
        ));
        // The policy covers inbox queues someone declares by hand without our arguments.
        let mut policy_def = Map::new();
        for (k, v) in self.inbox_arguments() {
            if k != ARG_QUEUE_TYPE {
                policy_def.insert(k.trim_start_matches("x-").to_string(), v.to_json());
            }
        }
        json!({
            "rabbit_version": "3.10.8",
            "exchanges": [
                exchange(&self.route_exchange, ROUTE_EXCHANGE_TYPE),
                exchange(&self.dead_exchange, DEAD_EXCHANGE_TYPE),
            ],
            "queues": queues,
            "bindings": bindings,
            "policies": [{
                "vhost": "/",
                "name": "sammen-inbox",
                "pattern": format!("^{}", self.inbox_prefix.replace('.', "\\.")),
                "apply-to": "queues",
                "priority": 0,
                "definition": Value::Object(policy_def),
            }],
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The receivers used in the shipped definitions (MedCom example GLNs).
    const EXAMPLE_RECEIVERS: [&str; 2] = ["5790001348120", "5790000121441"];

    fn shipped_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/rabbitmq/definitions.json")
    }

    #[test]
    fn shipped_definitions_match_the_code() {
        let want = Topology::default().definitions(&EXAMPLE_RECEIVERS);
        if std::env::var_os("SAMMEN_BLESS").is_some() {
            let text = serde_json::to_string_pretty(&want).unwrap() + "\n";
            std::fs::write(shipped_path(), text).unwrap();
        }
        let text = std::fs::read_to_string(shipped_path())
            .expect("deploy/rabbitmq/definitions.json is missing (run with SAMMEN_BLESS=1)");
        let got: Value = serde_json::from_str(&text).expect("definitions.json parses");
        assert_eq!(
            got, want,
            "definitions.json differs from the code (SAMMEN_BLESS=1 rewrites it)"
        );

        // And spelled out, so a reader of this test sees the contract without the generator.
        let names = |k: &str| -> Vec<String> {
            got[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("exchanges"), [ROUTE_EXCHANGE, DEAD_EXCHANGE]);
        assert!(names("queues").contains(&DEAD_QUEUE.to_string()));
        let receipts = got["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == crate::receipts::RECEIPTS_QUEUE)
            .expect("the receipts queue is declared");
        assert_eq!(receipts["arguments"][ARG_QUEUE_TYPE], QUEUE_TYPE_QUORUM);
        let inbox = &got["queues"][1];
        assert_eq!(inbox["name"], format!("{INBOX_PREFIX}5790001348120"));
        assert_eq!(inbox["arguments"][ARG_QUEUE_TYPE], QUEUE_TYPE_QUORUM);
        assert_eq!(
            inbox["arguments"][ARG_DELIVERY_LIMIT],
            DEFAULT_DELIVERY_LIMIT
        );
        assert_eq!(inbox["arguments"][ARG_DEAD_LETTER_EXCHANGE], DEAD_EXCHANGE);
        assert_eq!(got["bindings"][1]["routing_key"], "5790001348120.#");
        assert_eq!(got["exchanges"][0]["type"], "topic");
    }

    #[test]
    fn namespacing_prefixes_every_name() {
        let t = Topology::namespaced("t1");
        assert_eq!(t.route_exchange, "t1.sammen.route");
        assert_eq!(
            t.inbox_queue("5790001348120"),
            "t1.sammen.inbox.5790001348120"
        );
        assert_eq!(t.dead_queue, "t1.sammen.dead");
    }
}
