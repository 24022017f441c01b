"""What every omnistock service shares: settings, database, Kafka, outbox, inbox, HTTP, auth."""
