//! CloudWatch: the state of named alarms (metric and composite).

use aws_sdk_cloudwatch::types::StateValue;

use super::{Aws, AwsError};

impl Aws {
    /// `(name, state)` of every named alarm that exists (100 names per call).
    pub async fn alarm_states(
        &self,
        region: &str,
        names: &[String],
    ) -> Result<Vec<(String, Option<StateValue>)>, AwsError> {
        let c = self.clients(region);
        let mut found = Vec::new();
        for chunk in names.chunks(100) {
            let out = self
                .call(&c.region, "cloudwatch", "DescribeAlarms", || {
                    c.cloudwatch
                        .describe_alarms()
                        .set_alarm_names(Some(chunk.to_vec()))
                        .max_records(100)
                        .send()
                })
                .await?;
            let metric = out
                .metric_alarms()
                .iter()
                .map(|a| (a.alarm_name(), a.state_value()));
            let composite = out
                .composite_alarms()
                .iter()
                .map(|a| (a.alarm_name(), a.state_value()));
            for (name, value) in metric.chain(composite) {
                if let Some(name) = name {
                    found.push((name.to_string(), value.cloned()));
                }
            }
        }
        Ok(found)
    }
}
