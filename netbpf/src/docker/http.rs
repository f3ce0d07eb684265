//! Just enough HTTP/1.1 over unix sockets for the two conversations with Docker: serving
//! the plugin protocol (requests with a body, keep-alive) and asking the Engine API a
//! question (GET, one connection each). Bodies are JSON; headers other than the framing
//! ones are ignored.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    sync::Arc,
    time::Duration,
};

/// Headers larger than this are refused (Docker's are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
/// Bodies larger than this are refused (the largest call carries a container's ports).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long a connection may sit idle between requests (Docker keeps them alive).
const IDLE: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The client asked to close the connection after the answer.
    pub close: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The start line and headers of a message, up to the blank line. `None` on a clean end of
/// stream before anything was read.
/// A message's start line, and its headers (names in lower case).
type Head = (String, Vec<(String, String)>);

fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Head>> {
    let mut start = String::new();
    // Tolerate empty lines before a message (RFC 9112, 2.2).
    loop {
        start.clear();
        if r.read_line(&mut start)? == 0 {
            return Ok(None);
        }
        if !start.trim().is_empty() {
            break;
        }
    }
    let mut size = start.len();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed inside the headers"));
        }
        size += line.len();
        if size > MAX_HEAD {
            return Err(invalid("headers too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("malformed header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some((start.trim_end().to_owned(), headers)))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The body as the headers frame it: Content-Length, chunked, or (`to_eof`, answers
/// only) everything until the peer closes.
fn read_body<R: BufRead>(
    r: &mut R,
    headers: &[(String, String)],
    to_eof: bool,
) -> io::Result<Vec<u8>> {
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(r);
    }
    if let Some(len) = header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(invalid(format!("body of {len} bytes is too large")));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if to_eof {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(invalid("body too large"));
        }
    }
    Ok(body)
}

fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed inside a chunked body"));
        }
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut trailer = String::new();
                if r.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
pub fn read_request<R: BufRead>(r: &mut R) -> io::Result<Option<Request>> {
    let Some((start, headers)) = read_head(r)? else {
        return Ok(None);
    };
    let mut parts = start.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("malformed request line {start:?}")));
    };
    let body = read_body(r, &headers, false)?;
    let connection = header(&headers, "connection").map(str::to_ascii_lowercase);
    let close = match connection.as_deref() {
        Some(c) if c.contains("close") => true,
        Some(c) if c.contains("keep-alive") => false,
        _ => version == "HTTP/1.0",
    };
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        body,
        close,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    }
}

pub fn write_response<W: Write>(w: &mut W, response: &Response, close: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if close { "Connection: close\r\n" } else { "" },
    );
    w.write_all(head.as_bytes())?;
    w.write_all(&response.body)?;
    w.flush()
}

/// Answers requests on `listener`, a thread per connection, until the process exits. A
/// connection that sends something that is not HTTP is answered 400 and closed.
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn Fn(&Request) -> Response + Send + Sync>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("docker-plugin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                let _ = std::thread::Builder::new()
                    .name("docker-call".into())
                    .spawn(move || connection(stream, handler.as_ref()));
            }
        })
}

fn connection(stream: UnixStream, handler: &(dyn Fn(&Request) -> Response + Send + Sync)) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        match read_request(&mut reader) {
            Ok(Some(request)) => {
                let response = handler(&request);
                if write_response(&mut writer, &response, request.close).is_err() || request.close {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let response = Response {
                    status: 400,
                    content_type: "text/plain",
                    body: format!("{e}\n").into_bytes(),
                };
                let _ = write_response(&mut writer, &response, true);
                return;
            }
        }
    }
}

/// `GET path` on the unix socket `socket`; returns the status and the body. The whole
/// exchange (connect, request, answer) must fit in `timeout` per read or write.
pub fn get(socket: &Path, path: &str, timeout: Duration) -> io::Result<(u16, Vec<u8>)> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(e.kind(), format!("connecting to {}: {e}", socket.display()))
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    write!(
        writer,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: netbpf\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    writer.flush()?;
    let mut reader = BufReader::new(stream);
    let (start, headers) =
        read_head(&mut reader)?.ok_or_else(|| invalid("connection closed before an answer"))?;
    let status = start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("malformed status line {start:?}")))?;
    let body = read_body(&mut reader, &headers, true)?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn keep_alive_requests_follow_each_other() {
        let raw = b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\n\r\nPOST /NetworkDriver.Join HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let mut r = Cursor::new(&raw[..]);
        let first = read_request(&mut r).expect("valid").expect("a request");
        assert_eq!(
            (first.method.as_str(), first.path.as_str()),
            ("POST", "/Plugin.Activate")
        );
        assert!(first.body.is_empty() && !first.close);
        let second = read_request(&mut r).expect("valid").expect("a request");
        assert_eq!(second.path, "/NetworkDriver.Join");
        assert_eq!(second.body, b"{}");
        assert_eq!(read_request(&mut r).expect("clean end"), None);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\n\r\n";
        let request = read_request(&mut Cursor::new(&raw[..]))
            .expect("valid")
            .expect("a request");
        assert_eq!(request.body, br#"{"a":1}"#);
        assert!(request.close);
    }

    #[test]
    fn garbage_is_an_error() {
        for raw in [
            &b"HELLO\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(read_request(&mut Cursor::new(raw)).is_err(), "{raw:?}");
        }
        let raw = b"POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n";
        assert!(read_request(&mut Cursor::new(&raw[..])).is_err());
    }

    #[test]
    fn responses_are_framed() {
        let mut out = Vec::new();
        let response = Response {
            status: 200,
            content_type: "application/json",
            body: b"{}".to_vec(),
        };
        write_response(&mut out, &response, false).expect("writes");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn server_and_client_talk_over_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("netbpf-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("s.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).expect("binds");
        serve(
            listener,
            Arc::new(|r: &Request| Response {
                status: if r.path == "/ok" { 200 } else { 404 },
                content_type: "text/plain",
                body: format!("{} {}", r.method, r.path).into_bytes(),
            }),
        )
        .expect("serves");
        let (status, body) = get(&socket, "/ok", Duration::from_secs(5)).expect("answers");
        assert_eq!((status, body.as_slice()), (200, &b"GET /ok"[..]));
        let (status, _) = get(&socket, "/nope", Duration::from_secs(5)).expect("answers");
        assert_eq!(status, 404);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
