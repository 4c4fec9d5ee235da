//! The events queue: SQS long polls for EventBridge events, and deleting what was handled.

use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

use super::{Aws, AwsError};

/// One message: its receipt handle (to delete it) and its body (an EventBridge event).
pub struct Message {
    pub receipt: String,
    pub body: String,
}

impl Aws {
    /// Up to 10 messages, waiting up to `wait` for the first (SQS long polling).
    pub async fn receive_events(
        &self,
        region: &str,
        queue_url: &str,
        wait: Duration,
    ) -> Result<Vec<Message>, AwsError> {
        let c = self.clients(region);
        let out = self
            .call(&c.region, "sqs", "ReceiveMessage", || {
                c.sqs
                    .receive_message()
                    .queue_url(queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(wait.as_secs() as i32)
                    .send()
            })
            .await?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(Message {
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    /// Deletes handled messages (10 per call, SQS' limit).
    pub async fn delete_events(
        &self,
        region: &str,
        queue_url: &str,
        receipts: &[String],
    ) -> Result<(), AwsError> {
        let c = self.clients(region);
        for chunk in receipts.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .ok()
                })
                .collect();
            self.call(&c.region, "sqs", "DeleteMessageBatch", || {
                c.sqs
                    .delete_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(entries.clone()))
                    .send()
            })
            .await?;
        }
        Ok(())
    }
}
