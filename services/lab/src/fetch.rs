//! The lab's CDI importer's HTTP client: a plain HTTP/1.1 GET to a loopback address (127.0.0.0/8,
//! `localhost`, `[::1]`), following redirects as Go's client does (at most 10), with the body read
//! as it comes (`Content-Length`, chunked, or until the server closes). Any other host fails the way
//! CDI's importer fails when it cannot reach one. Errors read as Go's (`Get "<url>": dial tcp
//! 127.0.0.1:9: connect: connection refused`), since CDI shows them in the DataVolume's conditions.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Redirects followed before giving up (Go's default).
const MAX_REDIRECTS: usize = 10;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A URL the client can fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// As given (for messages).
    pub text: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parse an `http://` URL. `Err` is the Go-style reason.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let rest = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "Get \"{text}\": the lab's importer speaks plain http only"
            ));
        }
        Some((scheme, _)) => {
            return Err(format!(
                "Get \"{text}\": unsupported protocol scheme \"{scheme}\""
            ));
        }
        None => {
            return Err(format!("Get \"{text}\": unsupported protocol scheme \"\""));
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("parse \"{text}\": missing ']' in host"))?;
        let port = after.strip_prefix(':').unwrap_or("");
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        80
    } else {
        port.parse::<u16>()
            .map_err(|_| format!("parse \"{text}\": invalid port \":{port}\" after host"))?
    };
    if host.is_empty() {
        return Err(format!("Get \"{text}\": http: no Host in request URL"));
    }
    Ok(Url {
        text: text.to_string(),
        host,
        port,
        path,
    })
}

/// The loopback address a host names, if it names one.
pub fn loopback(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Some(ip),
        _ => None,
    }
}

/// How the body is delimited.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked { left: u64, done: bool },
    Close,
}

/// A response whose body is read as it arrives.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Go's `resp.Status`: `404 Not Found`.
    pub status_text: String,
    pub content_length: Option<u64>,
    reader: BufReader<TcpStream>,
    framing: Framing,
}

/// GET `url`, following redirects. `Err` is Go's `*url.Error` text.
pub async fn get(url: &str) -> Result<Response, String> {
    let mut current = parse_url(url)?;
    for _ in 0..=MAX_REDIRECTS {
        let resp = get_once(&current).await?;
        if matches!(resp.response.status, 301 | 302 | 303 | 307 | 308)
            && let Some(location) = resp.location.clone()
        {
            current = resolve(&current, &location)?;
            continue;
        }
        return Ok(resp.response);
    }
    Err(format!(
        "Get \"{}\": stopped after {MAX_REDIRECTS} redirects",
        current.text
    ))
}

fn resolve(base: &Url, location: &str) -> Result<Url, String> {
    if location.contains("://") {
        return parse_url(location);
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{dir}/{location}")
    };
    let host = if base.host.contains(':') {
        format!("[{}]", base.host)
    } else {
        base.host.clone()
    };
    parse_url(&format!("http://{host}:{}{path}", base.port))
}

struct Fetched {
    response: Response,
    location: Option<String>,
}

async fn get_once(url: &Url) -> Result<Fetched, String> {
    let fail = |reason: String| format!("Get \"{}\": {reason}", url.text);
    let Some(ip) = loopback(&url.host) else {
        return Err(match url.host.parse::<IpAddr>() {
            Ok(ip) => fail(format!(
                "dial tcp {}: connect: network is unreachable",
                SocketAddr::new(ip, url.port)
            )),
            Err(_) => fail(format!("dial tcp: lookup {}: no such host", url.host)),
        });
    };
    let addr = SocketAddr::new(ip, url.port);
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        };
        fail(format!("dial tcp {addr}: connect: {reason}"))
    })?;
    let _ = stream.set_nodelay(true);
    let host_header = match (ip, url.port) {
        (IpAddr::V6(_), 80) => format!("[{}]", url.host),
        (IpAddr::V6(_), p) => format!("[{}]:{p}", url.host),
        (_, 80) => url.host.clone(),
        (_, p) => format!("{}:{p}", url.host),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.path
    );
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(format!("write tcp {addr}: {e}")))?;
    let eof = || fail("EOF".into());
    let mut line = String::new();
    let mut head_len = 0usize;
    read_line(&mut reader, &mut line, &mut head_len)
        .await
        .map_err(|_| eof())?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reason = parts.next().unwrap_or("").to_string();
    let status: u16 = match (proto.starts_with("HTTP/1."), code.parse()) {
        (true, Ok(c)) => c,
        _ => return Err(fail(format!("net/http: malformed HTTP response {line:?}"))),
    };
    let mut content_length = None;
    let mut chunked = false;
    let mut location = None;
    loop {
        line.clear();
        read_line(&mut reader, &mut line, &mut head_len)
            .await
            .map_err(|_| eof())?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse::<u64>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "location" => location = Some(value.to_string()),
            _ => {}
        }
    }
    let framing = if chunked {
        content_length = None;
        Framing::Chunked {
            left: 0,
            done: false,
        }
    } else {
        match content_length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    Ok(Fetched {
        response: Response {
            status,
            status_text: format!("{status} {reason}").trim_end().to_string(),
            content_length,
            reader,
            framing,
        },
        location,
    })
}

async fn read_line(
    reader: &mut BufReader<TcpStream>,
    line: &mut String,
    total: &mut usize,
) -> std::io::Result<()> {
    let n = reader.read_line(line).await?;
    *total += n;
    if n == 0 || *total > MAX_HEAD {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

impl Response {
    /// Read body bytes into `buf`; 0 at the end. A body cut short is `UnexpectedEof`.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let short = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        match &mut self.framing {
            Framing::Close => self.reader.read(buf).await,
            Framing::Length(left) => {
                if *left == 0 {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(short());
                }
                *left -= n as u64;
                Ok(n)
            }
            Framing::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let mut line = String::new();
                    if self.reader.read_line(&mut line).await? == 0 {
                        return Err(short());
                    }
                    let size = line.trim().split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "malformed chunked encoding",
                        )
                    })?;
                    if size == 0 {
                        // Trailers, then the end.
                        loop {
                            line.clear();
                            if self.reader.read_line(&mut line).await? == 0
                                || line.trim().is_empty()
                            {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(short());
                }
                *left -= n as u64;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    self.reader.read_exact(&mut crlf).await?;
                }
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_loopback() {
        let u = parse_url("http://127.0.0.1:8080/images/a.qcow2?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/images/a.qcow2?x=1")
        );
        let u = parse_url("http://[::1]/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(parse_url("http://localhost").unwrap().path, "/");
        assert!(parse_url("ftp://x/y").is_err());
        assert!(loopback("localhost").is_some());
        assert!(loopback("127.3.2.1").is_some());
        assert!(loopback("::1").is_some());
        assert!(loopback("10.0.0.1").is_none());
        assert!(loopback("images.example").is_none());
        let base = parse_url("http://127.0.0.1:81/a/b.img").unwrap();
        assert_eq!(resolve(&base, "c.img").unwrap().path, "/a/c.img");
        assert_eq!(resolve(&base, "/d").unwrap().port, 81);
    }

    #[tokio::test]
    async fn other_hosts_fail_as_go_does() {
        let e = get("http://images.example/x.qcow2").await.unwrap_err();
        assert_eq!(
            e,
            "Get \"http://images.example/x.qcow2\": dial tcp: lookup images.example: no such host"
        );
    }

    #[tokio::test]
    async fn reads_length_chunked_and_close_framed_bodies() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let replies: [&[u8]; 4] = [
                b"HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                b"HTTP/1.0 404 Not Found\r\n\r\ngone",
            ];
            for reply in replies {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                s.write_all(reply).await.unwrap();
            }
        });
        async fn body(r: &mut Response) -> Vec<u8> {
            let mut out = Vec::new();
            let mut buf = [0u8; 2];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    return out;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        let mut r = get(&format!("http://{addr}/a")).await.unwrap();
        assert_eq!((r.status, r.content_length), (200, Some(5)));
        assert_eq!(body(&mut r).await, b"hello");
        let mut r = get(&format!("http://localhost:{}/c", addr.port()))
            .await
            .unwrap();
        assert_eq!((r.status, r.content_length), (200, None));
        assert_eq!(body(&mut r).await, b"abcde");
        let mut r = get(&format!("http://{addr}/d")).await.unwrap();
        assert_eq!(r.status_text, "404 Not Found");
        assert_eq!(body(&mut r).await, b"gone");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = get(&format!("http://127.0.0.1:{port}/e"))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            format!(
                "Get \"http://127.0.0.1:{port}/e\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }
}
