//! The ring's SQEs byte by byte, and what it does with REGISTERs the kernel refuses.
use super::*;

fn bytes(entry: &squeue::Entry128) -> [u8; 128] {
    assert_eq!(size_of::<squeue::Entry128>(), 128);
    let mut out = [0u8; 128];
    // SAFETY: `Entry128` is 128 bytes of plain integers (checked above); reading them as
    // bytes reads initialised memory (the builder starts from a zeroed SQE).
    out.copy_from_slice(unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(entry).cast::<u8>(), 128)
    });
    out
}

#[test]
fn sqe_len_is_the_word_at_byte_24_between_addr_and_op_flags() {
    let mut area = [0u8; 80];
    area[0] = 0xC1;
    area[79] = 0xC2;
    let mut entry = opcode::UringCmd80::new(types::Fd(0x1122_3344), 0x5566_7788)
        .cmd(area)
        .addr(Some(0x0102_0304_0506_0708))
        .build();
    let before = bytes(&entry);
    // The fields the builder set, where the uapi header puts them.
    assert_eq!(before[4..8], 0x1122_3344i32.to_ne_bytes());
    assert_eq!(before[8..12], 0x5566_7788u32.to_ne_bytes());
    assert_eq!(before[16..24], 0x0102_0304_0506_0708u64.to_ne_bytes());
    assert_eq!(before[24..28], [0; 4]);
    // The command area: bytes 48..128 of a 128-byte SQE.
    assert_eq!((before[48], before[127]), (0xC1, 0xC2));

    set_sqe_len(&mut entry, 2);
    let after = bytes(&entry);
    assert_eq!(after[24..28], 2u32.to_ne_bytes());
    assert_eq!(after[..24], before[..24]);
    assert_eq!(after[28..], before[28..]);
}

#[test]
fn register_carries_the_iovecs_the_count_and_the_queue() {
    let rings = Rings::new(&[0, 1], 1, 8192).unwrap();
    let slot = &rings.slots[1];
    let b = bytes(&register_entry(7, slot, 1));
    assert_eq!(b[4..8], 7i32.to_ne_bytes());
    assert_eq!(b[8..12], 1u32.to_ne_bytes(), "cmd_op REGISTER");
    assert_eq!(b[16..24], (slot.iov.0.as_ptr() as u64).to_ne_bytes());
    assert_eq!(b[24..28], 2u32.to_ne_bytes());
    // fuse_uring_cmd_req at the command area: qid at its byte 16.
    assert_eq!(b[48 + 16..48 + 18], 1u16.to_ne_bytes());
    assert_eq!(slot.iov.0[0].iov_len, 288);
    assert_eq!(slot.iov.0[1].iov_len, 8192);
}

#[test]
fn a_register_the_kernel_refuses_is_reported_at_once_and_ends_the_loop() {
    // A regular file has no io_uring commands: the kernel fails each REGISTER inline, as
    // it would on a FUSE connection that cannot take one.
    let file = tempfile::tempfile().unwrap();
    let mut rings = Rings::new(&[0, 1], 1, 8192).unwrap();
    match rings.register(OwnedFd::from(file)) {
        Err(RegisterError::Refused { qid: 0, errno }) => {
            assert!(errno > 0, "errno {errno}");
            let e = RegisterError::Refused { qid: 0, errno };
            assert!(e.to_string().contains("queue 0"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(rings.slots.iter().all(|s| s.state == State::Done));
    // Nothing is left in the kernel's hands: the loop ends at once, and the buffers are
    // freed on drop.
    assert!(matches!(
        rings.run(|_, _, _, _| panic!("no request can come")),
        Ended::Disconnected
    ));
}

#[test]
fn entries_are_spread_over_every_queue() {
    let rings = Rings::new(&[0, 1, 2], 2, 8192).unwrap();
    let mut qids: Vec<u16> = rings.slots.iter().map(|s| s.qid).collect();
    qids.sort();
    assert_eq!(qids, [0, 0, 1, 1, 2, 2]);
    // A ring of its own per queue (step 4): every entry on that queue.
    let one = Rings::new(&[1], 3, 8192).unwrap();
    assert!(one.slots.iter().all(|s| s.qid == 1));
    assert_eq!(one.qids(), [1]);
    assert!(Rings::new(&[], 1, 8192).is_err());
}

#[test]
fn payload_size_is_the_kernels_max_payload_sz() {
    assert_eq!(payload_size(4096, 1, 4096), 8192);
    assert_eq!(payload_size(1 << 20, 32, 4096), 1 << 20);
    assert_eq!(payload_size(1 << 20, 512, 4096), 2 << 20);
    assert!(default_payload_size() >= MAX_WRITE as usize);
}

#[test]
fn cpu_lists_count_as_the_kernel_counts_them() {
    assert_eq!(count_cpu_list("0-1\n"), Some(2));
    assert_eq!(count_cpu_list("0"), Some(1));
    assert_eq!(count_cpu_list("0-3,8-11"), Some(8));
    assert_eq!(count_cpu_list("0,2,4"), Some(3));
    assert_eq!(count_cpu_list(""), None);
    assert_eq!(count_cpu_list("3-1"), None);
    assert_eq!(count_cpu_list("x"), None);
}

#[test]
fn this_machine_lists_its_possible_cpus() {
    assert!(possible_cpus().unwrap() >= 1);
}
