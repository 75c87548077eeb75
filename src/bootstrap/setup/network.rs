//! Discovery tags on the cluster's private subnets and security groups, and new subnets carved from free VPC
//! space.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Subnet, Tag, TagSpecification};

use super::{DiscoveryValue, Setup, SetupError};
use crate::bootstrap::cidr::{Ipv4Block, free_blocks, free_ranges};
use crate::bootstrap::report::Action;
use crate::cloud::error::CloudError;
use crate::names::{DISCOVERY_SET_BY_TAG, DISCOVERY_TAG, OWNER_TAG};

fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

impl Setup<'_> {
    /// The value of `karpenter.sh/discovery`: the cluster's name, the VPC's name, or what the user gave.
    pub(super) async fn discovery_value(&mut self) -> Result<String, SetupError> {
        match &self.options.discovery {
            DiscoveryValue::Cluster => Ok(self.options.cluster.clone()),
            DiscoveryValue::Explicit(value) => Ok(value.clone()),
            DiscoveryValue::Vpc => {
                let vpc_id = self.cluster.vpc_id.clone();
                self.cluster_vpc()
                    .await?
                    .as_ref()
                    .and_then(|v| tag_value(v.tags(), "Name"))
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
                    .ok_or(SetupError::VpcWithoutName { vpc: vpc_id, cluster: self.options.cluster.clone() })
            }
        }
    }

    /// The cluster's VPC as EC2 describes it.
    async fn cluster_vpc(&self) -> Result<Option<aws_sdk_ec2::types::Vpc>, SetupError> {
        let vpc_id = &self.cluster.vpc_id;
        let described = self
            .ec2
            .describe_vpcs()
            .vpc_ids(vpc_id)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeVpcs", Some(vpc_id), e))?;
        Ok(described.vpcs.and_then(|vpcs| vpcs.into_iter().next()))
    }

    /// The cluster's subnets with no route to an internet gateway.
    async fn private_subnets(&self) -> Result<Vec<Subnet>, SetupError> {
        let subnets = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(self.cluster.subnet_ids.clone()))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeSubnets", Some(&self.cluster.vpc_id), e))?
            .subnets
            .unwrap_or_default();
        let tables = self
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &self.cluster.vpc_id))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeRouteTables", Some(&self.cluster.vpc_id), e))?
            .route_tables
            .unwrap_or_default();
        let public_table = |table: &aws_sdk_ec2::types::RouteTable| {
            table.routes().iter().any(|r| r.gateway_id().is_some_and(|g| g.starts_with("igw-")))
        };
        let main_is_public =
            tables.iter().find(|t| t.associations().iter().any(|a| a.main() == Some(true))).is_some_and(public_table);
        Ok(subnets
            .into_iter()
            .filter(|subnet| {
                let id = subnet.subnet_id().unwrap_or_default();
                let explicit = tables.iter().find(|t| t.associations().iter().any(|a| a.subnet_id() == Some(id)));
                !explicit.map_or(main_is_public, public_table)
            })
            .collect())
    }

    pub(super) async fn discovery_tags(&mut self, value: &str) -> Result<(), SetupError> {
        let subnets: Vec<(String, Vec<Tag>)> = self
            .private_subnets()
            .await?
            .into_iter()
            .map(|s| (s.subnet_id().unwrap_or_default().to_string(), s.tags().to_vec()))
            .collect();
        let groups: Vec<(String, Vec<Tag>)> = if self.cluster.security_group_ids.is_empty() {
            Vec::new()
        } else {
            self.ec2
                .describe_security_groups()
                .set_group_ids(Some(self.cluster.security_group_ids.clone()))
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("ec2:DescribeSecurityGroups", Some(&self.cluster.vpc_id), e))?
                .security_groups()
                .iter()
                .map(|g| (g.group_id().unwrap_or_default().to_string(), g.tags().to_vec()))
                .collect()
        };
        for (kind, resources) in [("subnet-discovery-tag", subnets), ("security-group-discovery-tag", groups)] {
            for (id, tags) in resources {
                match tag_value(&tags, DISCOVERY_TAG) {
                    Some(existing) if existing == value => {
                        self.ledger.record(kind, id, Action::Unchanged, 0);
                    }
                    Some(existing) => {
                        return Err(SetupError::DiscoveryConflict {
                            resource: id,
                            existing: existing.to_string(),
                            wanted: value.to_string(),
                        });
                    }
                    None => {
                        if self.ledger.may_mutate() {
                            self.ec2
                                .create_tags()
                                .resources(&id)
                                .tags(Tag::builder().key(DISCOVERY_TAG).value(value).build())
                                .tags(Tag::builder().key(DISCOVERY_SET_BY_TAG).value(&self.options.cluster).build())
                                .send()
                                .await
                                .map_err(|e| CloudError::from_sdk("ec2:CreateTags", Some(&id), e))?;
                        }
                        self.ledger.record(kind, id, Action::Created, 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// One new subnet of `/prefix` per zone of the cluster's subnets, from the VPC's free space; none where this
    /// cluster already has one.
    pub(super) async fn subnets(&mut self, prefix: u8, discovery_value: &str) -> Result<(), SetupError> {
        let vpc_id = self.cluster.vpc_id.clone();
        let vpc = self.cluster_vpc().await?;
        let vpc_blocks: Vec<Ipv4Block> = vpc
            .iter()
            .flat_map(|v| v.cidr_block_association_set())
            .filter(|a| a.cidr_block_state().and_then(|s| s.state()).is_none_or(|s| s.as_str() == "associated"))
            .filter_map(|a| a.cidr_block()?.parse().ok())
            .collect();
        let in_vpc = self
            .ec2
            .describe_subnets()
            .filters(filter("vpc-id", &vpc_id))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeSubnets", Some(&vpc_id), e))?
            .subnets
            .unwrap_or_default();
        let mut occupied: Vec<Ipv4Block> = in_vpc.iter().filter_map(|s| s.cidr_block()?.parse().ok()).collect();
        let cluster_subnets: Vec<&Subnet> = in_vpc
            .iter()
            .filter(|s| self.cluster.subnet_ids.iter().any(|id| Some(id.as_str()) == s.subnet_id()))
            .collect();
        let zones: BTreeMap<String, Option<String>> = cluster_subnets
            .iter()
            .filter_map(|s| Some((s.availability_zone()?.to_string(), s.subnet_id().map(str::to_string))))
            .collect();
        for (zone, sibling) in zones {
            let ours = in_vpc.iter().find(|s| {
                s.availability_zone() == Some(zone.as_str())
                    && tag_value(s.tags(), OWNER_TAG) == Some(self.options.cluster.as_str())
            });
            if let Some(existing) = ours {
                let id = existing.subnet_id().unwrap_or_default().to_string();
                // A run stopped between creating the subnet and associating it finishes the job now.
                let associated = match &sibling {
                    Some(sibling) if self.ledger.may_mutate() => self.same_route_table_as(sibling, &id).await?,
                    _ => false,
                };
                self.ledger.record(
                    "subnet",
                    id,
                    if associated { Action::Updated } else { Action::Unchanged },
                    u32::from(associated),
                );
                continue;
            }
            let Some(block) = free_blocks(&vpc_blocks, &occupied, prefix, 1).into_iter().next() else {
                let free: Vec<String> = free_ranges(&vpc_blocks, &occupied).iter().map(ToString::to_string).collect();
                return Err(SetupError::NoRoomForSubnet {
                    prefix,
                    vpc: vpc_id,
                    zone,
                    free: if free.is_empty() { "none".into() } else { free.join(", ") },
                });
            };
            occupied.push(block);
            let name = format!("nodesmith-{}-{zone}", self.options.cluster);
            let mut id = format!("{block} in {zone}");
            if self.ledger.may_mutate() {
                let tags = TagSpecification::builder()
                    .resource_type(ResourceType::Subnet)
                    .tags(self.ec2_owner_tag())
                    .tags(Tag::builder().key(DISCOVERY_TAG).value(discovery_value).build())
                    .tags(Tag::builder().key("Name").value(&name).build())
                    .build();
                let created = self
                    .ec2
                    .create_subnet()
                    .vpc_id(&vpc_id)
                    .availability_zone(&zone)
                    .cidr_block(block.to_string())
                    .tag_specifications(tags)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("ec2:CreateSubnet", Some(&vpc_id), e))?;
                let subnet_id = created.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string();
                id = format!("{subnet_id} ({block} in {zone})");
                if let Some(sibling) = sibling {
                    self.same_route_table_as(&sibling, &subnet_id).await?;
                }
            }
            self.ledger.record("subnet", id, Action::Created, 2);
        }
        Ok(())
    }

    /// Associates `subnet` with the route table explicitly associated with `sibling`, if it has one and `subnet`
    /// has none yet (else both use the VPC's main table already). Whether it made the association.
    async fn same_route_table_as(&mut self, sibling: &str, subnet: &str) -> Result<bool, SetupError> {
        let associated_with =
            |id: &str| self.ec2.describe_route_tables().filters(filter("association.subnet-id", id)).send();
        let theirs = associated_with(sibling)
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeRouteTables", Some(sibling), e))?;
        let Some(table) = theirs.route_tables().first().and_then(|t| t.route_table_id()) else { return Ok(false) };
        let ours = associated_with(subnet)
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DescribeRouteTables", Some(subnet), e))?;
        if !ours.route_tables().is_empty() {
            return Ok(false);
        }
        self.ec2
            .associate_route_table()
            .route_table_id(table)
            .subnet_id(subnet)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:AssociateRouteTable", Some(subnet), e))?;
        Ok(true)
    }
}
