//! Blobs in containerd's content store: written through the Content service's write
//! stream (containerd 1.6 has no Transfer service), read back, labelled for the garbage
//! collector.

use std::collections::HashMap;

use containerd_client::services::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::containerd::Containerd;
use crate::error::{CriError, Result};

/// Bytes sent to containerd per write message.
const CHUNK: usize = 1 << 20;

/// The blob's info if containerd has it.
pub async fn info(ctd: &Containerd, digest: &str) -> Result<Option<Info>> {
    match ctd
        .content()
        .info(ctd.req(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().info),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(CriError::containerd(format!("look up blob {digest}"), s)),
    }
}

/// Adds `labels` to an existing blob.
pub async fn add_labels(
    ctd: &Containerd,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let info = Info {
        digest: digest.to_string(),
        labels,
        ..Default::default()
    };
    ctd.content()
        .update(ctd.req(UpdateRequest {
            info: Some(info),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .map_err(|s| CriError::containerd(format!("label blob {digest}"), s))?;
    Ok(())
}

/// Writes a blob of `size` bytes that must hash to `digest`, unless containerd has it
/// already; either way it ends up carrying `labels`. containerd verifies size and
/// digest at commit, so a corrupt download is never stored.
pub async fn write<S, E>(
    ctd: &Containerd,
    lease: &str,
    digest: &str,
    size: i64,
    labels: HashMap<String, String>,
    data: S,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if info(ctd, digest).await?.is_some() {
        return add_labels(ctd, digest, labels).await;
    }
    let reference = format!("gantry-pull-{digest}");
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(2);
    // Stat first (a write interrupted earlier, say by a restart mid-pull, resumes). It
    // is queued before the call: containerd answers the call only once the first
    // message has arrived.
    let stat_req = WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.clone(),
        ..Default::default()
    };
    tx.send(stat_req)
        .await
        .map_err(|_| CriError::Internal(format!("write blob {digest}: stream closed")))?;
    let mut responses = ctd
        .content()
        .write(ctd.req_leased(ReceiverStream::new(rx), Some(lease)))
        .await
        .map_err(|s| CriError::containerd(format!("open a write of blob {digest}"), s))?
        .into_inner();
    let mut writer = Writer {
        tx,
        responses: &mut responses,
        digest,
    };
    let stat = writer.receive().await?;
    let mut offset = stat.offset;
    let mut skip = offset;
    let mut data = data;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    loop {
        let next = data.next().await;
        let done = next.is_none();
        if let Some(chunk) = next {
            let chunk =
                chunk.map_err(|e| CriError::Unavailable(format!("download blob {digest}: {e}")))?;
            let mut bytes: &[u8] = &chunk;
            if skip > 0 {
                let n = (skip as usize).min(bytes.len());
                bytes = &bytes[n..];
                skip -= n as i64;
            }
            buf.extend_from_slice(bytes);
        }
        if buf.len() >= CHUNK || (done && !buf.is_empty()) {
            let len = buf.len() as i64;
            writer
                .exchange(WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    offset,
                    data: std::mem::take(&mut buf),
                    ..Default::default()
                })
                .await?;
            offset += len;
        }
        if done {
            break;
        }
    }
    let committed = writer
        .exchange(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total: size,
            offset,
            expected: digest.to_string(),
            labels,
            ..Default::default()
        })
        .await;
    match committed {
        Ok(_) => Ok(()),
        // Another pull stored the same blob in the meantime.
        Err(CriError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One request, one response: containerd answers every write message.
struct Writer<'a> {
    tx: mpsc::Sender<WriteContentRequest>,
    responses: &'a mut tonic::Streaming<containerd_client::services::v1::WriteContentResponse>,
    digest: &'a str,
}

impl Writer<'_> {
    async fn exchange(
        &mut self,
        req: WriteContentRequest,
    ) -> Result<containerd_client::services::v1::WriteContentResponse> {
        let digest = self.digest;
        self.tx
            .send(req)
            .await
            .map_err(|_| CriError::Internal(format!("write blob {digest}: stream closed")))?;
        self.receive().await
    }

    async fn receive(&mut self) -> Result<containerd_client::services::v1::WriteContentResponse> {
        let digest = self.digest;
        match self.responses.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(CriError::Internal(format!(
                "write blob {digest}: containerd ended the stream"
            ))),
            Err(s) => Err(CriError::containerd(format!("write blob {digest}"), s)),
        }
    }
}

/// Reads a whole (small) blob: manifests and image configs.
pub async fn read_all(ctd: &Containerd, digest: &str) -> Result<Vec<u8>> {
    let mut stream = ctd
        .content()
        .read(ctd.req(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(|s| CriError::containerd(format!("read blob {digest}"), s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(part) = stream
        .message()
        .await
        .map_err(|s| CriError::containerd(format!("read blob {digest}"), s))?
    {
        out.extend_from_slice(&part.data);
    }
    Ok(out)
}
