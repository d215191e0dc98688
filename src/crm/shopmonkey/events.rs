//! Decodes ShopMonkey webhook bodies (reference §1.7): `{apiVersion, operation, table, data,
//! diff}`. Only what routing needs is read; the whole body stays in the inbox. Legacy v2
//! payloads (`eventId`, `eventType`, `entity`) are refused with a clear reason.

use leadorch_actors::ports::{CrmEvent, CrmEventDecoder};
use serde_json::Value;

/// The dedupe key of a delivery: the changed row and its version when the body has them (so a
/// redelivery under a new request id is still a duplicate), else the delivery's own id.
pub fn event_key(payload: &Value, request_id_opt: Option<&str>, webhook_id_opt: Option<&str>) -> Option<String> {
    let table = payload.get("table").and_then(Value::as_str);
    let row_id = payload.pointer("/data/id").and_then(Value::as_str);
    let version = payload.pointer("/data/meta/version").and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
    let operation = payload.get("operation").and_then(Value::as_str).unwrap_or("");
    match (table, row_id, version) {
        (Some(table), Some(id), Some(version)) => Some(format!("{table}:{id}:v{version}:{operation}")),
        _ => request_id_opt.map(|r| format!("req:{r}")).or_else(|| webhook_id_opt.map(|w| format!("wh:{w}"))),
    }
}

/// Decodes ShopMonkey v3 webhook bodies.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShopMonkeyEventDecoder;

impl CrmEventDecoder for ShopMonkeyEventDecoder {
    fn decode(&self, payload: &Value) -> Result<CrmEvent, String> {
        if payload.get("eventType").is_some() || payload.get("entity").is_some() {
            return Err(
                "legacy v2 webhook payloads are not supported; re-create the webhook in shopmonkey v3".to_owned()
            );
        }
        let table = payload.get("table").and_then(Value::as_str).ok_or("missing `table`")?;
        let operation = payload.get("operation").and_then(Value::as_str).ok_or("missing `operation`")?;
        if table == "appointment" && operation == "INSERT" {
            let text = |pointer: &str| payload.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
            return Ok(CrmEvent::AppointmentCreated {
                customer_id_opt: text("/data/customerId"),
                order_id_opt: text("/data/orderId"),
            });
        }
        if table != "order" {
            return Ok(CrmEvent::Other { table: table.to_owned() });
        }
        let order_id = payload.pointer("/data/id").and_then(Value::as_str).ok_or("missing `data.id`")?;
        match operation {
            "INSERT" => Ok(CrmEvent::OrderChanged { order_id: order_id.to_owned(), created: true }),
            "UPDATE" => Ok(CrmEvent::OrderChanged { order_id: order_id.to_owned(), created: false }),
            other => Ok(CrmEvent::Other { table: format!("order {other}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_order_insert_decodes_to_an_order_change() {
        let body = json!({"apiVersion": "3", "operation": "INSERT", "table": "order", "data": {"id": "ord_1"}});
        assert_eq!(
            ShopMonkeyEventDecoder.decode(&body),
            Ok(CrmEvent::OrderChanged { order_id: "ord_1".into(), created: true })
        );
    }

    #[test]
    fn other_tables_and_deletes_are_not_order_changes() {
        let customer = json!({"apiVersion": 3, "operation": "INSERT", "table": "customer", "data": {"id": "c"}});
        let delete = json!({"apiVersion": 3, "operation": "DELETE", "table": "order", "data": {"id": "o"}});
        assert!(matches!(ShopMonkeyEventDecoder.decode(&customer), Ok(CrmEvent::Other { .. })));
        assert!(matches!(ShopMonkeyEventDecoder.decode(&delete), Ok(CrmEvent::Other { .. })));
    }

    #[test]
    fn legacy_and_malformed_payloads_are_refused_with_a_reason() {
        let legacy = json!({"eventId": "e", "eventType": "order.created", "entity": "order", "data": {}});
        assert!(ShopMonkeyEventDecoder.decode(&legacy).is_err_and(|r| r.contains("legacy")));
        assert!(ShopMonkeyEventDecoder.decode(&json!({"table": "order"})).is_err());
    }

    #[test]
    fn the_event_key_prefers_the_row_version_over_the_delivery_id() {
        let body = json!({"operation": "UPDATE", "table": "order", "data": {"id": "ord_1", "meta": {"version": 4}}});
        assert_eq!(event_key(&body, Some("req-1"), None).as_deref(), Some("order:ord_1:v4:UPDATE"));
        let unversioned = json!({"operation": "UPDATE", "table": "order", "data": {"id": "ord_1"}});
        assert_eq!(event_key(&unversioned, Some("req-1"), Some("wh-1")).as_deref(), Some("req:req-1"));
        assert_eq!(event_key(&unversioned, None, Some("wh-1")).as_deref(), Some("wh:wh-1"));
        assert_eq!(event_key(&unversioned, None, None), None);
    }
}
