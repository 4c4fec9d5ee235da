//! The lease table in DynamoDB: one item per environment lease and one per live replica, and
//! the conditional writes that make a lease safe (taken only when free or expired, renewed and
//! released only by its holder at the version it holds).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType,
};

use super::{Aws, AwsError};

/// Key prefix of an environment's lease item (`lease#<environment>`).
pub const LEASE: &str = "lease#";
/// Key prefix of a live replica's item (`replica#<id>`).
pub const REPLICA: &str = "replica#";

/// The lease table and the replica using it: what every lease call names.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    pub region: String,
    pub name: String,
    /// This replica's id (the `owner` it writes).
    pub me: String,
}

/// One item of the lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `lease#<environment>` or `replica#<id>`.
    pub pk: String,
    pub owner: Option<String>,
    pub version: u64,
    /// Unix milliseconds after which the lease (or the replica) counts as gone.
    pub expires_at_ms: u64,
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn num(item: &HashMap<String, AttributeValue>, key: &str) -> u64 {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn row(item: &HashMap<String, AttributeValue>) -> Option<Row> {
    Some(Row {
        pk: item.get("pk")?.as_s().ok()?.clone(),
        owner: item.get("owner").and_then(|v| v.as_s().ok()).cloned(),
        version: num(item, "version"),
        expires_at_ms: num(item, "expires_at_ms"),
    })
}

impl Aws {
    /// Creates the lease table (key `pk`, on demand); `Ok(false)` when it already exists.
    pub async fn create_lease_table(&self, region: &str, table: &str) -> Result<bool, AwsError> {
        let c = self.clients(region);
        let res = self
            .call(&c.region, "dynamodb", "CreateTable", || {
                c.dynamodb
                    .create_table()
                    .table_name(table)
                    .billing_mode(BillingMode::PayPerRequest)
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name("pk")
                            .key_type(KeyType::Hash)
                            .build()
                            .expect("key schema fields set"),
                    )
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name("pk")
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .expect("attribute fields set"),
                    )
                    .send()
            })
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.code.as_deref() == Some("ResourceInUseException") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every lease and replica item (the table holds one per environment and per replica).
    pub async fn lease_rows(&self, t: &LeaseTable) -> Result<Vec<Row>, AwsError> {
        let (c, table) = (self.clients(&t.region), t.name.as_str());
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        // Bounded: a table of leases is small; 100 pages of 1 MB would be a different table.
        for _ in 0..100 {
            let page = self
                .call(&c.region, "dynamodb", "Scan", || {
                    c.dynamodb
                        .scan()
                        .table_name(table)
                        .consistent_read(true)
                        .set_exclusive_start_key(start.clone())
                        .send()
                })
                .await?;
            out.extend(page.items().iter().filter_map(row));
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Takes `env`'s lease for this replica if it is free or expired (at `now_ms`);
    /// `Ok(None)` if another holds it. Returns the new version.
    pub async fn take_lease(
        &self,
        t: &LeaseTable,
        env: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<u64>, AwsError> {
        let (c, table, me) = (self.clients(&t.region), t.name.as_str(), t.me.as_str());
        let pk = format!("{LEASE}{env}");
        let res = self
            .call(&c.region, "dynamodb", "UpdateItem", || {
                c.dynamodb
                    .update_item()
                    .table_name(table)
                    .key("pk", s(&pk))
                    .update_expression(
                        "SET #o = :me, expires_at_ms = :exp, version = if_not_exists(version, :zero) + :one",
                    )
                    .condition_expression("attribute_not_exists(pk) OR expires_at_ms < :now")
                    .expression_attribute_names("#o", "owner")
                    .expression_attribute_values(":me", s(me))
                    .expression_attribute_values(":exp", n(now_ms + ttl_ms))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":now", n(now_ms))
                    .return_values(ReturnValue::UpdatedNew)
                    .send()
            })
            .await;
        version_or_lost(res)
    }

    /// Renews `env`'s lease for this replica at `version` (fencing: any other write since
    /// makes it fail); `Ok(None)` when the lease is no longer this replica's at that version.
    /// Returns the new version.
    pub async fn renew_lease(
        &self,
        t: &LeaseTable,
        env: &str,
        version: u64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<u64>, AwsError> {
        let (c, table, me) = (self.clients(&t.region), t.name.as_str(), t.me.as_str());
        let pk = format!("{LEASE}{env}");
        let res = self
            .call(&c.region, "dynamodb", "UpdateItem", || {
                c.dynamodb
                    .update_item()
                    .table_name(table)
                    .key("pk", s(&pk))
                    .update_expression("SET expires_at_ms = :exp, version = version + :one")
                    .condition_expression("#o = :me AND version = :v")
                    .expression_attribute_names("#o", "owner")
                    .expression_attribute_values(":me", s(me))
                    .expression_attribute_values(":v", n(version))
                    .expression_attribute_values(":exp", n(now_ms + ttl_ms))
                    .expression_attribute_values(":one", n(1))
                    .return_values(ReturnValue::UpdatedNew)
                    .send()
            })
            .await;
        version_or_lost(res)
    }

    /// Gives `env`'s lease up if this replica still holds it at `version`.
    pub async fn release_lease(
        &self,
        t: &LeaseTable,
        env: &str,
        version: u64,
    ) -> Result<(), AwsError> {
        let (c, table, me) = (self.clients(&t.region), t.name.as_str(), t.me.as_str());
        let pk = format!("{LEASE}{env}");
        let res = self
            .call(&c.region, "dynamodb", "DeleteItem", || {
                c.dynamodb
                    .delete_item()
                    .table_name(table)
                    .key("pk", s(&pk))
                    .condition_expression("#o = :me AND version = :v")
                    .expression_attribute_names("#o", "owner")
                    .expression_attribute_values(":me", s(me))
                    .expression_attribute_values(":v", n(version))
                    .send()
            })
            .await;
        match res {
            Err(e) if !condition_failed(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Says this replica is alive until `expires_at_ms` (`replica#<me>`), or, with `None`,
    /// that it left.
    pub async fn heartbeat(
        &self,
        t: &LeaseTable,
        expires_at_ms: Option<u64>,
    ) -> Result<(), AwsError> {
        let (c, table, me) = (self.clients(&t.region), t.name.as_str(), t.me.as_str());
        let pk = format!("{REPLICA}{me}");
        match expires_at_ms {
            Some(exp) => {
                self.call(&c.region, "dynamodb", "PutItem", || {
                    c.dynamodb
                        .put_item()
                        .table_name(table)
                        .item("pk", s(&pk))
                        .item("owner", s(me))
                        .item("expires_at_ms", n(exp))
                        .send()
                })
                .await?;
            }
            None => {
                self.call(&c.region, "dynamodb", "DeleteItem", || {
                    c.dynamodb
                        .delete_item()
                        .table_name(table)
                        .key("pk", s(&pk))
                        .send()
                })
                .await?;
            }
        }
        Ok(())
    }
}

fn version_or_lost(
    res: Result<aws_sdk_dynamodb::operation::update_item::UpdateItemOutput, AwsError>,
) -> Result<Option<u64>, AwsError> {
    match res {
        Ok(out) => Ok(Some(
            out.attributes()
                .map(|a| num(a, "version"))
                .unwrap_or_default(),
        )),
        Err(e) if condition_failed(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The write's condition did not hold: another replica holds the lease (or took it since).
fn condition_failed(e: &AwsError) -> bool {
    e.code.as_deref() == Some("ConditionalCheckFailedException")
}
