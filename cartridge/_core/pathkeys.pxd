cpdef tuple file_key(object path)
