//! Opening images: what is refused, and how the errors say what to do.

use super::refused::assert_io_error;
use super::*;

#[test]
fn a_missing_image_is_reported_with_its_path() {
    let dir = TempDir::new_with_prefix("/tmp/ballast-block-test-").unwrap();
    let path = dir.as_path().join("nope.img");
    let err = Block::new(BlockConfig::new(&path)).err().unwrap();
    assert!(matches!(err, BlockError::NotFound { .. }));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("build-disk-image.sh"), "{message}");
}

#[test]
fn a_directory_is_not_an_image() {
    let dir = TempDir::new_with_prefix("/tmp/ballast-block-test-").unwrap();
    for read_only in [false, true] {
        let config = BlockConfig {
            path: dir.as_path().to_path_buf(),
            read_only,
        };
        assert!(matches!(
            Block::new(config),
            Err(BlockError::NotAnImage { .. })
        ));
    }
}

#[test]
fn an_image_smaller_than_a_sector_is_refused() {
    for size in [0, 1, 511] {
        let file = image(size);
        let err = Block::new(BlockConfig::new(file.as_path())).err().unwrap();
        assert!(
            matches!(err, BlockError::TooSmall { size: s, .. } if s == size),
            "{err}"
        );
    }
}

#[test]
fn an_image_with_a_partial_last_sector_keeps_its_tail_untouched() {
    let (mut block, image) = block_of_size(IMAGE_SIZE + 100, false);
    let mut driver = Driver::activate(&mut block, None).unwrap();
    let req = driver.write(63, &[&[0x66; 512]]);
    block.run_queue();
    assert_eq!(driver.status(&req), OK);
    let req = driver.write(63, &[&[0x55; 1024]]);
    assert_io_error(&mut block, &driver, image.as_path(), &req);
    let bytes = file_bytes(image.as_path());
    assert_eq!(bytes.len() as u64, IMAGE_SIZE + 100);
    assert_eq!(bytes[IMAGE_SIZE as usize..], pattern(IMAGE_SIZE, 100));
}

#[test]
fn an_image_in_use_is_refused() {
    let file = image(IMAGE_SIZE);
    let rw = || BlockConfig::new(file.as_path());
    let ro = || BlockConfig {
        path: file.as_path().to_path_buf(),
        read_only: true,
    };
    {
        let _writer = Block::new(rw()).unwrap();
        assert!(matches!(
            Block::new(rw()),
            Err(BlockError::Locked {
                read_only: false,
                ..
            })
        ));
        assert!(matches!(
            Block::new(ro()),
            Err(BlockError::Locked {
                read_only: true,
                ..
            })
        ));
    }
    {
        // Readers share.
        let _a = Block::new(ro()).unwrap();
        let _b = Block::new(ro()).unwrap();
        assert!(matches!(Block::new(rw()), Err(BlockError::Locked { .. })));
    }
    // Closed images are free again.
    Block::new(rw()).unwrap();
}

#[test]
fn open_errors_say_what_to_do() {
    let path = Path::new("/images/root.img");
    let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
    let err = open_error(path, false, denied());
    assert!(matches!(err, BlockError::NotWritable { .. }));
    assert!(err.to_string().contains("readonly=on"), "{err}");
    let err = open_error(path, false, std::io::Error::from_raw_os_error(libc::EROFS));
    assert!(matches!(err, BlockError::NotWritable { .. }));
    let err = open_error(path, true, denied());
    assert!(matches!(err, BlockError::Open { .. }));
    assert!(err.to_string().contains("/images/root.img"), "{err}");
    let err = open_error(path, false, std::io::Error::from_raw_os_error(libc::ENOENT));
    assert!(matches!(err, BlockError::NotFound { .. }));
}

#[test]
fn a_read_only_disk_opens_an_image_it_may_not_write() {
    let file: TempFile = image(IMAGE_SIZE);
    let mut permissions = std::fs::metadata(file.as_path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o444);
    std::fs::set_permissions(file.as_path(), permissions).unwrap();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        read_only: true,
    };
    let block = Block::new(config).unwrap();
    assert_eq!(block.capacity_sectors(), 64);
    // (Refusing the writable open needs a user that permissions apply to; root bypasses them,
    // so that side is covered by `open_errors_say_what_to_do`.)
}
