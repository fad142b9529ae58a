/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * VMFUNC protected memory views for KVM guests on Intel VMX (kvm_intel).
 *
 * A view is a small EPT hierarchy that kvm_intel builds only from 4 KiB pages
 * the VMM approves.  A guest whose VMM enabled views can switch from its
 * default view (index 0, KVM's own EPT) to a published view and back with
 * VMFUNC leaf 0 (EPTP switching), without a VM exit.
 *
 * All commands go through the VM ioctl KVM_MEMORY_ENCRYPT_OP (unused on VMX)
 * with a pointer to struct kvm_vmfunc_cmd whose first word is
 * KVM_VMFUNC_MAGIC.  A kernel without this API fails that ioctl with ENOTTY.
 */
#ifndef _UAPI_ASM_X86_KVM_VMFUNC_H
#define _UAPI_ASM_X86_KVM_VMFUNC_H

#include <linux/types.h>

#define KVM_VMFUNC_MAGIC		0x56564d46	/* "FMVV" little-endian */
#define KVM_VMFUNC_API_VERSION		1

/* Commands (struct kvm_vmfunc_cmd.cmd). */
#define KVM_VMFUNC_QUERY		0	/* out: query */
#define KVM_VMFUNC_ENABLE		1	/* before the first vCPU exists */
#define KVM_VMFUNC_VIEW_CREATE		2	/* in: view */
#define KVM_VMFUNC_VIEW_MAP		3	/* in: map; view not published */
#define KVM_VMFUNC_VIEW_PUBLISH		4	/* in: view.index */
#define KVM_VMFUNC_VIEW_DESTROY		5	/* in: view.index */
#define KVM_VMFUNC_VCPU_STATS		6	/* in: stats.vcpu_id, out: stats */

/* Views 1..KVM_VMFUNC_MAX_VIEW; 0 is the default view (KVM's own EPT). */
#define KVM_VMFUNC_MAX_VIEW		511
/* Upper bound on the pages one view may hold. */
#define KVM_VMFUNC_MAX_VIEW_PAGES	4096

/*
 * Permissions of a mapped page (struct kvm_vmfunc_map.perm).  Exactly one of
 * R, R|W, R|X.  W|X is refused; X pages are copied into kernel pages at map
 * time, so no view ever maps them writable and later writes to the source
 * memory do not reach the view.
 */
#define KVM_VMFUNC_PERM_R		(1u << 0)
#define KVM_VMFUNC_PERM_W		(1u << 1)
#define KVM_VMFUNC_PERM_X		(1u << 2)

/* struct kvm_vmfunc_query.flags */
#define KVM_VMFUNC_QUERY_HW		(1u << 0)	/* CPU and KVM can do it */
#define KVM_VMFUNC_QUERY_ENABLED	(1u << 1)	/* this VM enabled it */

struct kvm_vmfunc_query {
	__u32 version;
	__u32 flags;
	__u32 max_view;
	__u32 max_view_pages;
};

struct kvm_vmfunc_view {
	__u32 index;		/* 1..KVM_VMFUNC_MAX_VIEW */
	__u32 pad;
	__u64 tag;		/* what the guest asks for in the hypercall */
};

struct kvm_vmfunc_map {
	__u32 index;		/* view */
	__u32 perm;		/* KVM_VMFUNC_PERM_* */
	__u64 gpa;		/* page aligned guest physical address in the view */
	__u64 uaddr;		/* page aligned VMM address of the first page */
	__u64 npages;
};

struct kvm_vmfunc_stats {
	__u32 vcpu_id;
	__u32 current_view;	/* index at the vCPU's last exit, 0 = default */
	__u64 vmfunc_ud;	/* VMFUNC exits turned into #UD */
	__u64 view_faults;	/* EPT violations/misconfigs taken in a view */
	__u64 forced_default;	/* returns to the default view forced by KVM */
};

struct kvm_vmfunc_cmd {
	__u32 magic;		/* KVM_VMFUNC_MAGIC */
	__u32 cmd;		/* KVM_VMFUNC_* */
	__u64 flags;		/* must be 0 */
	union {
		struct kvm_vmfunc_query query;
		struct kvm_vmfunc_view view;
		struct kvm_vmfunc_map map;
		struct kvm_vmfunc_stats stats;
		__u8 pad[64];
	};
};

/*
 * Guest discovery.  The VMM that enabled views sets this bit in EAX of KVM's
 * CPUID leaf 0x40000001 (KVM_CPUID_FEATURES).  The guest then asks for a
 * published view by tag with the hypercall below (VMCALL, CPL 0 only):
 *   in:  RAX = KVM_HC_VMFUNC_VIEW_QUERY, RBX = tag
 *   out: RAX = view index (1..511), or -KVM_ENOENT_VIEW when no published
 *        view has that tag, or -KVM_EPERM at CPL > 0, or -KVM_ENOSYS when
 *        the VM did not enable views.
 */
#define KVM_FEATURE_VMFUNC_VIEWS	28
#define KVM_HC_VMFUNC_VIEW_QUERY	0x56564d01
#define KVM_ENOENT_VIEW			2

#endif /* _UAPI_ASM_X86_KVM_VMFUNC_H */
