//! The CCS `ReplicatorOrder`, as it travels between sites.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::hash;
use crate::model::names::{check_bucket, check_object};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Create,
    Update,
    Delete,
    Unknown,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
            Action::Unknown => "UNKNOWN",
        }
    }
    pub fn parse(s: &str) -> Action {
        match s {
            "CREATE" => Action::Create,
            "UPDATE" => Action::Update,
            "DELETE" => Action::Delete,
            _ => Action::Unknown,
        }
    }
}

/// A replication order. No `objectName` means a bucket order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub op_id: String,
    pub from_site: String,
    pub to_site: String,
    pub client_id: String,
    pub bucket_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub action: Action,
    /// Creation (ms since the epoch) of the version the order creates or deletes, a
    /// mirrorgate addition: a receiver compares it with what it holds or deleted (see the
    /// README, Replication). Absent from older peers, which get the behaviour without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_time: Option<i64>,
}

impl Order {
    /// Checks an order received from a peer, addressed to `self_site`.
    pub fn validate(&mut self, self_site: &str) -> Result<()> {
        let bad = |m: String| {
            Err(Error::bad_request(format!(
                "invalid order {:?}: {m}",
                self.op_id
            )))
        };
        if self.op_id.trim().is_empty() {
            return Err(Error::bad_request("invalid order: opId is empty"));
        }
        if self.from_site.trim().is_empty() || self.client_id.trim().is_empty() {
            return bad("fromSite and clientId are required".into());
        }
        if self.from_site == self_site {
            return bad(format!("fromSite is this site ({self_site})"));
        }
        if self.to_site != self_site {
            return bad(format!(
                "addressed to {:?}, this site is {self_site:?}",
                self.to_site
            ));
        }
        check_bucket(&self.bucket_name)?;
        if let Some(o) = &self.object_name {
            check_object(o)?;
        }
        match self.action {
            Action::Unknown => return bad("action must be CREATE, UPDATE or DELETE".into()),
            Action::Create | Action::Update if self.object_name.is_some() => {
                let Some(h) = self.hash.as_deref().and_then(hash::normalize) else {
                    return bad(
                        "an object CREATE/UPDATE needs a SHA-256 hash in CCS encoding".into(),
                    );
                };
                if self.size.is_none() {
                    return bad("an object CREATE/UPDATE needs its size".into());
                }
                self.hash = Some(h);
            }
            // A DELETE may name the version it deletes.
            Action::Delete if self.hash.is_some() => {
                let Some(h) = self.hash.as_deref().and_then(hash::normalize) else {
                    return bad("a DELETE's hash must be a SHA-256 in CCS encoding".into());
                };
                self.hash = Some(h);
            }
            _ => {}
        }
        Ok(())
    }

    pub fn is_bucket_order(&self) -> bool {
        self.object_name.is_none()
    }
}

/// Outcome of an order at the receiving site, as `POST /replicator/remote/orders/status` tells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatus {
    pub op_id: String,
    /// PENDING, PROCESSING, DONE, FAILED or UNKNOWN.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        Order {
            op_id: "op1".into(),
            from_site: "a".into(),
            to_site: "b".into(),
            client_id: "c".into(),
            bucket_name: "bkt".into(),
            object_name: Some("x/y".into()),
            size: Some(1),
            hash: Some(hash::of(b"x").to_uppercase()),
            action: Action::Create,
            version_time: None,
        }
    }

    #[test]
    fn valid_order_is_normalised() {
        let mut o = order();
        o.validate("b").unwrap();
        assert_eq!(o.hash.unwrap(), hash::of(b"x"));
    }

    #[test]
    fn invalid_orders_are_refused_with_a_reason() {
        let mut o = order();
        assert!(o
            .validate("c")
            .unwrap_err()
            .message
            .contains("addressed to"));
        let mut o = order();
        o.hash = None;
        assert!(o.validate("b").unwrap_err().message.contains("hash"));
        let mut o = order();
        o.action = Action::Unknown;
        assert!(o.validate("b").is_err());
        let mut o = order();
        o.bucket_name = "BAD".into();
        assert!(o.validate("b").is_err());
        let json = r#"{"opId":"1","fromSite":"a","toSite":"b","clientId":"c","bucketName":"bkt","action":"DELETE"}"#;
        let mut o: Order = serde_json::from_str(json).unwrap();
        o.validate("b").unwrap();
        assert!(o.is_bucket_order());
    }
}

/// Who made a change: a client of this site (fanned out to the peers) or a peer's order.
#[derive(Debug, Clone)]
pub enum WriteOrigin {
    Client { client_id: String },
    Replica { from_site: String },
}
