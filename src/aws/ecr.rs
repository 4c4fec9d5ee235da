//! ECR: does an image tag exist.

use super::{Aws, AwsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageLookup {
    Found,
    NoSuchTag,
    NoSuchRepository,
}

impl Aws {
    pub async fn image(
        &self,
        region: &str,
        repository: &str,
        tag: &str,
    ) -> Result<ImageLookup, AwsError> {
        let c = self.clients(region);
        let res = self
            .call(&c.region, "ecr", "DescribeImages", || {
                c.ecr
                    .describe_images()
                    .repository_name(repository)
                    .image_ids(
                        aws_sdk_ecr::types::ImageIdentifier::builder()
                            .image_tag(tag)
                            .build(),
                    )
                    .send()
            })
            .await;
        match res {
            Ok(o) if !o.image_details().is_empty() => Ok(ImageLookup::Found),
            Ok(_) => Ok(ImageLookup::NoSuchTag),
            Err(e) if e.code.as_deref() == Some("ImageNotFoundException") => {
                Ok(ImageLookup::NoSuchTag)
            }
            Err(e) if e.code.as_deref() == Some("RepositoryNotFoundException") => {
                Ok(ImageLookup::NoSuchRepository)
            }
            Err(e) => Err(e),
        }
    }
}
