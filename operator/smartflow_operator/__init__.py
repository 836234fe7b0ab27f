"""The Smartflow operator: reconciles SmartflowRuntime resources into role workloads and
autoscales the relay and consumer roles from outbox lag."""
