"""The audit trail: every admin action as an event on ``__system/__audit``.

- events.py: the event and its record format (canonical JSON);
- stage.py: the front-door stage that builds one event per admin call;
- writer.py: the queue and owner task that append events durably, on this
  node's leader replica or through the leader's NodeAdmin.
"""
