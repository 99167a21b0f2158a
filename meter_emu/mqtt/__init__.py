"""MQTT: the embedded broker and the bridge that feeds injected quantities to the meters."""
