# Setup steps 5-6: the interruption queue and the EventBridge rules that feed it (src/bootstrap/setup/queue.rs).

resource "aws_sqs_queue" "interruption" {
  name = local.names.queue
  # Messages older than the spot warning's two minutes are of no use; five minutes leaves room for retries.
  message_retention_seconds = 300
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

# Setup passes the same document as the queue's Policy attribute when it creates the queue.
resource "aws_sqs_queue_policy" "interruption" {
  queue_url = aws_sqs_queue.interruption.id
  policy    = jsonencode(local.queue_policy)
}

resource "aws_cloudwatch_event_rule" "interruption" {
  for_each = local.interruption_events

  name          = local.names.rules[each.key]
  description   = "nodesmith: ${each.value.detail_type} to the interruption queue of ${var.cluster_name}"
  event_pattern = jsonencode(local.event_patterns[each.key])
  tags          = local.tags
}

resource "aws_cloudwatch_event_target" "interruption" {
  for_each = local.interruption_events

  rule      = aws_cloudwatch_event_rule.interruption[each.key].name
  target_id = "nodesmith-interruption-queue"
  arn       = aws_sqs_queue.interruption.arn

  # Events delivered before the queue policy lets EventBridge send are dropped.
  depends_on = [aws_sqs_queue_policy.interruption]
}
