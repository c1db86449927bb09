//! "What is stored is what was sent" (issue Reliability, item 4): an event time with
//! microseconds and a `properties` object with the producer's own key order and whitespace
//! come back unchanged, as text, from the export (NDJSON and CSV) and `events/recent`,
//! after a real broker, the connector and the gateway on a real socket.

use crate::common::broker::{produce, random_name, TestBroker, TestRecord};
use crate::common::{http, Connector};
use chrono::{SecondsFormat, Timelike, Utc};
use std::time::Duration;
use streamtally::gateway::auth::token_sha256_hex;

const ADMIN: &str = "round-trip-admin-token";

/// Whether `t` is RFC 3339 UTC with exactly six fractional digits.
fn has_micros(t: &str) -> bool {
    t.len() == 27 && t.as_bytes()[19] == b'.' && t.ends_with('Z')
}

#[test]
fn microsecond_times_and_properties_text_round_trip_through_export() {
    let broker = TestBroker::mock(1);
    let topic = random_name("round-trip");
    broker.create_topic(&topic, 1);
    let org = uuid::Uuid::new_v4();
    // An hour ago, with a microsecond part that milliseconds would cut.
    let t = (Utc::now() - chrono::Duration::hours(1))
        .with_nanosecond(861_546_000)
        .unwrap();
    let ts = t.to_rfc3339_opts(SecondsFormat::Micros, true);
    assert!(ts.ends_with(".861546Z"), "{ts}");
    // Keys not in sorted order, whitespace inside, a number as written (2.50), nesting.
    let props = r#"{ "zeta": 1, "alpha": {"b": 2.50,  "a": [true, null]},	"mid" : "x y" }"#;
    // Line breaks in the producer's whitespace: kept in CSV and recent events; in NDJSON,
    // where a line is an event, they become spaces.
    let multiline = "{\n  \"k\": \"v\",\n  \"b\": 1\n}";
    let payload = |name: &str, p: &str| {
        format!(
            r#"{{"org_id":"{org}","event_type":"track","event_name":"{name}","user_id":"u1","timestamp":"{ts}","properties":{p}}}"#
        )
        .into_bytes()
    };
    let records: Vec<TestRecord> = vec![
        (None, Some(payload("first", props)), vec![], Some(0)),
        (None, Some(payload("second", multiline)), vec![], Some(0)),
    ];
    produce(&broker.bootstrap, &topic, &records);

    let connector = Connector::start(&broker.bootstrap, &[&topic], &random_name("rt"), |cfg| {
        cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
        cfg.batching.max_batch_delay_ms = 20;
        cfg.auth.admin_token_sha256 = Some(token_sha256_hex(ADMIN));
    });
    let services = connector.services();
    let addr = services.gateway_addr.to_string();
    connector.wait_for("both events stored", Duration::from_secs(60), |c| {
        c.stored(&topic, 1) >= 2
    });

    let from = (t - chrono::Duration::minutes(1)).timestamp_millis();
    let to = (t + chrono::Duration::minutes(1)).timestamp_millis();
    let export = |format: &str| {
        let path = format!("/api/v1/orgs/{org}/export?from={from}&to={to}&format={format}");
        let r = http::get(&addr, &path, Some(ADMIN)).expect("the gateway answers");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    };

    // NDJSON: the text of each line, compared exactly where the producer's text is kept.
    let ndjson = export("ndjson");
    let lines: Vec<&str> = ndjson.lines().collect();
    assert_eq!(lines.len(), 2, "{ndjson}");
    let first = lines
        .iter()
        .find(|l| l.contains("\"event_name\":\"first\""))
        .unwrap();
    assert!(
        first.contains(&format!("\"properties\":{props},")),
        "properties changed on the way:\nsent     {props}\nexported {first}"
    );
    assert!(
        first.contains(&format!("\"timestamp\":\"{ts}\"")),
        "time changed: sent {ts}, exported {first}"
    );
    let second = lines
        .iter()
        .find(|l| l.contains("\"event_name\":\"second\""))
        .unwrap();
    let one_line = multiline.replace('\n', " ");
    assert!(
        second.contains(&format!("\"properties\":{one_line},")),
        "{second}"
    );
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        for field in ["timestamp", "ingested_at"] {
            let s = v[field].as_str().unwrap_or_default();
            assert!(has_micros(s), "{field} {s:?} has not six fractional digits");
        }
    }

    // CSV: the properties cell is the stored text, line breaks included.
    let csv = export("csv");
    let quoted = |p: &str| format!("\"{}\"\r\n", p.replace('"', "\"\""));
    assert!(csv.contains(&quoted(props)), "{csv}");
    assert!(csv.contains(&quoted(multiline)), "{csv}");
    assert!(csv.contains(&format!(",{ts},")), "{csv}");

    // The REST answer keeps the text too.
    let recent = http::get(
        &addr,
        &format!("/api/v1/orgs/{org}/events/recent"),
        Some(ADMIN),
    )
    .expect("the gateway answers");
    assert_eq!(recent.status, 200, "{}", recent.body);
    assert!(
        recent.body.contains(&format!("\"properties\":{props},")),
        "{}",
        recent.body
    );
    assert!(
        recent
            .body
            .contains(&format!("\"properties\":{multiline},")),
        "{}",
        recent.body
    );
    assert!(recent.body.contains(&format!("\"timestamp\":\"{ts}\"")));

    connector.shutdown.cancel();
    services.join().expect("services stop cleanly");
}
