"""How long a consumer-group member waits on the embedded broker, and the settings that
keep the wait short, for our clients and for other projects' (no imports: the command
line's help shows them without loading a Kafka client)."""

# The embedded broker (Tansu, tansu-broker/src/coordinator/group/administrator.rs,
# Controller::join) holds every JoinGroup answer, retrying once a second, until half the
# group's session timeout has passed, so a member's first records come ~S/2 after it
# subscribes: 3.5 s at 6 s. 2 s sessions join in ~1 s; the heartbeat keeps 4 per session
# (the broker drops a member it has not heard from for a whole session).
KAFKA_SESSION_TIMEOUT_MS = 2000
KAFKA_HEARTBEAT_MS = 500
# The same for clients of other projects (librdkafka's names): its default 45 s session
# keeps a member waiting ~23 s, and the original's check_kafka_events gives up after 5.
OTHER_CLIENTS_GROUP_SETTINGS = {
    "session.timeout.ms": KAFKA_SESSION_TIMEOUT_MS,
    "heartbeat.interval.ms": KAFKA_HEARTBEAT_MS,
}
