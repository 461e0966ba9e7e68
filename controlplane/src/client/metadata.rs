//! A single node's metadata through its control messages: the [`Metadata`] trait over a
//! [`Client`], so that tags, search and the graph (`crate::graph`) work on one node as
//! they do on Redis. Every request and answer fits one datagram: tags are sent in
//! batches, and listings come in pages the node trims to fit.

use crate::client::{Client, ClientError};
use crate::control::{ControlRequest, ControlResponse, FileRecord, TagEdge};
use crate::metadata::{FileTag, Metadata, MetadataError, TagCount};

/// Request bytes a batch of tags stays under, leaving room for a 1024-byte name within
/// the smallest datagram a node takes.
const TAG_BATCH_BYTES: usize = 640;

fn node_error(error: ClientError) -> MetadataError {
    match error {
        ClientError::NotFound { name, .. } => MetadataError::NoSuchFile(name),
        other => MetadataError::Node(other.to_string()),
    }
}

impl Client {
    fn ask(&mut self, request: &ControlRequest) -> Result<ControlResponse, MetadataError> {
        self.control(request).map_err(node_error)
    }

    fn unexpected(&self, what: &str, answer: ControlResponse) -> MetadataError {
        MetadataError::Node(
            ClientError::Protocol { node: self.node(), what: format!("unexpected answer to {what}: {answer:?}") }
                .to_string(),
        )
    }
}

fn limit16(limit: usize) -> u16 {
    u16::try_from(limit.clamp(1, 1024)).unwrap_or(1024)
}

impl Metadata for Client {
    fn put_file(&mut self, record: &FileRecord) -> Result<Option<FileRecord>, MetadataError> {
        match self.ask(&ControlRequest::CommitFile(record.clone()))? {
            ControlResponse::Committed { replaced } => Ok(replaced),
            other => Err(self.unexpected("commit", other)),
        }
    }

    fn get_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError> {
        match self.ask(&ControlRequest::Lookup { name: name.to_owned() })? {
            ControlResponse::File(record) => Ok(Some(record)),
            ControlResponse::NotFound => Ok(None),
            other => Err(self.unexpected("lookup", other)),
        }
    }

    fn list(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<FileRecord>, MetadataError> {
        let request = ControlRequest::List { after: after.map(str::to_owned), limit: limit16(limit).min(256) };
        match self.ask(&request)? {
            ControlResponse::Listing { files, .. } => Ok(files),
            other => Err(self.unexpected("list", other)),
        }
    }

    fn remove_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError> {
        match self.ask(&ControlRequest::Remove { name: name.to_owned() })? {
            ControlResponse::Removed(record) => Ok(Some(record)),
            ControlResponse::NotFound => Ok(None),
            other => Err(self.unexpected("remove", other)),
        }
    }

    fn file_count(&mut self) -> Result<u64, MetadataError> {
        self.node_status().map(|status| status.files).map_err(node_error)
    }

    fn add_tags(&mut self, name: &str, tags: &[FileTag]) -> Result<usize, MetadataError> {
        let mut added = 0;
        let mut batch: Vec<TagEdge> = Vec::new();
        let mut bytes = 0;
        for (index, tag) in tags.iter().enumerate() {
            bytes += tag.tag.len() + tag.source.len() + 4;
            batch.push(tag.clone().into());
            let last = index + 1 == tags.len();
            if last || bytes >= TAG_BATCH_BYTES {
                let request = ControlRequest::AddTags { name: name.to_owned(), tags: std::mem::take(&mut batch) };
                bytes = 0;
                match self.ask(&request)? {
                    ControlResponse::TagsAdded { added: count } => added += count as usize,
                    ControlResponse::NotFound => return Err(MetadataError::NoSuchFile(name.to_owned())),
                    other => return Err(self.unexpected("tag", other)),
                }
            }
        }
        Ok(added)
    }

    fn remove_tags(&mut self, name: &str, tags: &[String]) -> Result<Vec<FileTag>, MetadataError> {
        let mut removed = Vec::new();
        let mut batch: Vec<String> = Vec::new();
        let mut bytes = 0;
        for (index, tag) in tags.iter().enumerate() {
            bytes += tag.len() + 2;
            batch.push(tag.clone());
            if index + 1 == tags.len() || bytes >= TAG_BATCH_BYTES {
                let request = ControlRequest::RemoveTags { name: name.to_owned(), tags: std::mem::take(&mut batch) };
                bytes = 0;
                match self.ask(&request)? {
                    ControlResponse::Tags(tags) => removed.extend(tags.into_iter().map(FileTag::from)),
                    other => return Err(self.unexpected("untag", other)),
                }
            }
        }
        Ok(removed)
    }

    fn tags_of(&mut self, name: &str, after: Option<&str>, limit: usize) -> Result<Vec<FileTag>, MetadataError> {
        let request =
            ControlRequest::TagsOf { name: name.to_owned(), after: after.map(str::to_owned), limit: limit16(limit) };
        match self.ask(&request)? {
            ControlResponse::Tags(tags) => Ok(tags.into_iter().map(FileTag::from).collect()),
            other => Err(self.unexpected("tags", other)),
        }
    }

    fn files_tagged(&mut self, tag: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, MetadataError> {
        let request =
            ControlRequest::FilesTagged { tag: tag.to_owned(), after: after.map(str::to_owned), limit: limit16(limit) };
        match self.ask(&request)? {
            ControlResponse::Names(names) => Ok(names),
            other => Err(self.unexpected("files of a tag", other)),
        }
    }

    fn tags_by_prefix(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TagCount>, MetadataError> {
        let request = ControlRequest::TagsByPrefix {
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            limit: limit16(limit),
        };
        match self.ask(&request)? {
            ControlResponse::TagCounts(counts) => {
                Ok(counts.into_iter().map(|(tag, files)| TagCount { tag, files }).collect())
            }
            other => Err(self.unexpected("tag completion", other)),
        }
    }
}
