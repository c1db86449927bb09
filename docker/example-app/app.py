#!/usr/bin/env python3
"""A tiny example app for the streamtally sidecar demo: it "does business" and emits one
product-analytics event per action to Kafka, in streamtally's native JSON format
(README.md, "Producing events"):

    {"org_id": uuid, "event_type": str, "event_name": str, "id": uuid, "user_id": str,
     "session_id": str, "timestamp": RFC 3339, "properties": {...}}

Settings (environment):
    KAFKA_BROKERS   bootstrap servers                     (default kafka:9092)
    TOPIC           topic to produce to                   (default events)
    ORG_IDS         comma-separated org uuids             (default the README's example org)
    RATE            events per second                     (default 5)
    EVENTS          stop after this many events, 0 = run until SIGTERM/SIGINT (default 0)

`python app.py --dry-run N` prints N events as JSON lines and exits without Kafka (the
packaging check uses it to check the event shape).
"""

import json
import os
import random
import signal
import sys
import time
import uuid
from datetime import datetime, timezone

DEFAULT_ORG = "7d0c7f2e-6a39-4d7e-8b1a-0c5f2d9e4a11"

# (event_type, event_name, properties generator)
ACTIONS = [
    ("page", "page_view", lambda r: {"path": r.choice(["/", "/shop", "/cart", "/help"])}),
    ("track", "product_viewed", lambda r: {"sku": "A-%d" % r.randint(1, 40)}),
    ("track", "add_to_cart", lambda r: {"sku": "A-%d" % r.randint(1, 40),
                                        "price": round(r.uniform(2, 80), 2)}),
    ("track", "checkout_started", lambda r: {"items": r.randint(1, 5)}),
    ("track", "order_completed", lambda r: {"total": round(r.uniform(10, 300), 2)}),
    ("identify", "signed_in", lambda r: {"method": r.choice(["password", "sso"])}),
]
WEIGHTS = [40, 25, 15, 8, 5, 7]


def make_event(rng, orgs, now=None):
    """One event in the native format; keyed by user so a user's events stay in order."""
    event_type, event_name, props = rng.choices(ACTIONS, weights=WEIGHTS)[0]
    user = rng.randint(1, 200)
    ts = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")
    return {
        "org_id": rng.choice(orgs),
        "event_type": event_type,
        "event_name": event_name,
        "id": str(uuid.uuid4()),
        "user_id": "u_%d" % user,
        "session_id": "s_%d_%d" % (user, int(time.time()) // 1800),
        "timestamp": ts.replace("+00:00", "Z"),
        "properties": props(rng),
    }


def main(argv):
    orgs = [o.strip() for o in os.environ.get("ORG_IDS", DEFAULT_ORG).split(",") if o.strip()]
    for o in orgs:
        uuid.UUID(o)  # fail fast on a bad org id
    rng = random.Random()

    if len(argv) >= 2 and argv[1] == "--dry-run":
        for _ in range(int(argv[2]) if len(argv) > 2 else 3):
            print(json.dumps(make_event(rng, orgs)))
        return 0

    # Imported here so that --dry-run needs no Kafka client.
    from confluent_kafka import Producer

    brokers = os.environ.get("KAFKA_BROKERS", "kafka:9092")
    topic = os.environ.get("TOPIC", "events")
    rate = float(os.environ.get("RATE", "5"))
    limit = int(os.environ.get("EVENTS", "0"))

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))

    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(err)
            print("delivery failed: %s" % err, file=sys.stderr, flush=True)

    producer = Producer({
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "client.id": "example-app",
    })
    print("example-app: producing %.1f event(s)/s to %s on %s for %d org(s)"
          % (rate, topic, brokers, len(orgs)), flush=True)
    sent = 0
    next_at = time.monotonic()
    while not stopping and (limit == 0 or sent < limit):
        event = make_event(rng, orgs)
        producer.produce(topic, key=event["user_id"], value=json.dumps(event),
                         on_delivery=on_delivery)
        sent += 1
        if sent % 100 == 0:
            print("example-app: %d event(s) produced, %d failed" % (sent, len(failed)),
                  flush=True)
        next_at += 1.0 / rate if rate > 0 else 0
        producer.poll(max(0.0, next_at - time.monotonic()))
    remaining = producer.flush(30)
    print("example-app: stopped after %d event(s), %d failed, %d undelivered"
          % (sent, len(failed), remaining), flush=True)
    return 1 if failed or remaining else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
